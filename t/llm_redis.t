#!/usr/bin/perl

# llm_redis (docs/redis.md): two nginx nodes and a real redis-server.
#
#  - spend on node A reaches node B's budget within the sync interval;
#  - spend recorded while Redis is stopped is in Redis once it is back,
#    exactly once; one [warn] when it goes, one [notice] when it returns;
#  - a cache entry stored on A is a hit on B; a node started after the
#    entry was made loads it;
#  - Redis stopped mid-traffic fails no request; Redis slow (DEBUG SLEEP)
#    adds no latency;
#  - a wrong password: one [error] line, however many reconnects;
#  - the worker's file descriptors do not grow over reloads.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use LLMGW;
use LLMGW::Chat;

my $redis_server = `command -v redis-server 2>/dev/null`;
chomp $redis_server;
plan(skip_all => 'redis-server not found') unless $redis_server;

my $a = LLMGW->new;
my $mock = $a->run_mock;
my $rport = $a->free_port;
my $rdir = $a->testdir;
my $PASS = 's3cret-redis';

sub redis_start {
    system("$redis_server --port $rport --bind 127.0.0.1 --save '' "
        . "--enable-debug-command yes "
        . "--appendonly no --requirepass $PASS --daemonize yes "
        . "--dir '$rdir' --pidfile '$rdir/redis.pid' "
        . "--logfile '$rdir/redis.log'") == 0 or die "redis-server";
    wait_until { defined cli('PING') && cli('PING') eq 'PONG' } timeout => 5;
}

sub redis_stop {
    my $pid = `cat '$rdir/redis.pid' 2>/dev/null`;
    chomp $pid;
    kill 'KILL', $pid if $pid;
    wait_until { !kill 0, $pid } timeout => 5 if $pid;
    unlink "$rdir/redis.pid";
}

sub cli {
    my $out = `redis-cli -p $rport -a $PASS --no-auth-warning @_ 2>/dev/null`;
    return undef if $?;
    chomp $out;
    return $out;
}

redis_start();

my $conf = <<'EOF';
http {
    llm_zone   llm 1m;
    llm_redis  127.0.0.1:%%RPORT%% zone=llm password=%%PASS%% prefix=t:
               sync=200ms timeout=300ms;

    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        llm_route m p:gpt-4o-mini;

        location /v1/ {
            llm_gateway;
            llm_budget llm $http_x_team 1 total;
            llm_cache  llm;
        }

        location /lim/v1/ {
            llm_gateway;
            llm_limit llm $http_x_team rpm=4;
        }

        location /cap/v1/ {
            llm_gateway;
            llm_budget llm $http_x_team 0.0025 total;
        }
EOF
$conf .= proxy_location('p', port => $mock) . "    }\n}\n";
$conf =~ s/%%RPORT%%/$rport/g;
$conf =~ s/%%PASS%%/$PASS/g;

$a->write_conf($conf);
$a->run;

my $b = LLMGW->new;
$b->write_conf($conf);
$b->run;

sub ask {
    my ($t, $text, %o) = @_;
    return chat($t, 'm', text => $text,
        headers => { 'X-Team' => $o{team} // 'shared' });
}

sub remaining { return $_[0]{headers}{'x-llm-budget-remaining'} }

# another node's end: stopped, its error.log checked as done() does
sub clean {
    my ($t, $name) = @_;
    $t->stop;
    my @bad = LLMGW::_distinct($t->bad_log_lines);
    ok(!@bad, "$name: error.log has no alert/crit/emerg lines")
        or diag(join "\n", @bad);
}

###############################################################################
# spend on A is seen on B

my $r = ask($a, 'spend on a __words_200__', team => 'ab');
is($r->{status}, 200, 'A: served');
my $cost = $r->{headers}{'x-llm-cost'};
ok($cost > 0, "A: cost $cost");

my $n = 0;
my $seen = wait_until {
    my $rb = ask($b, 'look on b ' . $n++, team => 'ab');
    (remaining($rb) // 1) <= 1 - $cost + 1e-6;
} timeout => 3, interval => 0.1;
ok($seen, 'B: the spend of A is in its remaining budget');

my $spent = cli('HGET', 't:budget:total:0:ab', 'spent');
ok(defined $spent && $spent >= $cost * 1e9, "Redis: spent $spent nano-USD");

###############################################################################
# a limit across nodes: rpm=4 in all

sub lim {
    my ($t, $i) = @_;
    return chat($t, 'm', uri => '/lim/v1/chat/completions', text => "lim $i",
        headers => { 'X-Team' => 'lim' })->{status};
}

is(join(' ', map { lim($a, $_) } 1 .. 3), '200 200 200', 'limit: 3 on A');
sleep 0.6;    # a few sync cycles (200 ms) for B to see them
is(lim($b, 4), 200, 'limit: the 4th on B');
sleep 0.6;    # B learns the use of the others for a key once it has one
is(lim($b, 5), 429, 'limit: the 5th on B refused')
    or diag(cli('HGETALL', 't:limit:lim'));
sleep 0.6;
is(lim($a, 6), 429, 'limit: and on A');

###############################################################################
# one budget, two nodes, 40 concurrent requests: never more than the cap
# (0.0025 USD: about 10 worst cases of 400 tokens of gpt-4o-mini)

my @pids;
for my $i (1 .. 40) {
    my $t = $i % 2 ? $a : $b;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = chat($t, 'm', uri => '/cap/v1/chat/completions',
            text => "concurrent $i __words_300__",
            body => { max_tokens => 400 },
            headers => { 'X-Team' => 'cap' });
        $a->write_file("cap-$i", join ' ', $r->{status},
            $r->{headers}{'x-llm-cost'} // 0);
        exit 0;
    }
    push @pids, $pid;
}
waitpid($_, 0) for @pids;

my ($ok, $no, $total) = (0, 0, 0);
for my $i (1 .. 40) {
    my ($st, $c) = split / /, $a->read_file("cap-$i") // '0 0';
    $ok++ if $st == 200;
    $no++ if $st == 402;
    $total += $c if $st == 200;
}
is($ok + $no, 40, "cap: every answer 200 or 402 ($ok, $no)");
ok($ok >= 5, "cap: served $ok");
ok($total <= 0.0025 + 1e-9, "cap: spent $total <= 0.0025 across two nodes");
my $redis_spent;
wait_until {
    $redis_spent = cli('HGET', 't:budget:total:0:cap', 'spent') // 0;
    abs($redis_spent / 1e9 - $total) < 1e-5;
} timeout => 3;
ok($redis_spent <= 2_500_000, "cap: Redis has $redis_spent nano-USD spent");

###############################################################################
# Redis away: requests go on, spend is pushed once when it is back

redis_stop();

my $sum = 0;
for my $i (1 .. 5) {
    $r = ask($a, "while away $i __words_50__", team => 'away');
    is($r->{status}, 200, "Redis away: request $i served");
    $sum += $r->{headers}{'x-llm-cost'};
}

ok((wait_until { $a->error_log =~ /llm_redis \S+ is unreachable/ }
    timeout => 3), 'Redis away: logged');

sleep 0.5;    # reconnects are tried meanwhile, and fail
my @warn = $a->error_log =~ /is unreachable/g;
is(scalar @warn, 1, 'Redis away: one warning');

redis_start();

ok((wait_until { $a->error_log =~ /is back/ } timeout => 15),
    'Redis back: logged');

my $pushed;
wait_until {
    $pushed = cli('HGET', 't:budget:total:0:away', 'spent');
    defined $pushed && $pushed ne '';
} timeout => 3;
ok(defined $pushed && abs($pushed / 1e9 - $sum) < 1e-5,
    "Redis back: the spend pushed ($pushed nano-USD for $sum USD)");
sleep 1;    # more sync cycles: the delta is not pushed again
is(cli('HGET', 't:budget:total:0:away', 'spent'), $pushed,
    'Redis back: pushed once');

###############################################################################
# cache: stored on A, a hit on B

$r = ask($a, 'cached across nodes');
is($r->{headers}{'x-llm-cache'}, 'MISS', 'cache: A stores');

my $hit = wait_until {
    my $rb = ask($b, 'cached across nodes');
    ($rb->{headers}{'x-llm-cache'} // '') eq 'HIT';
} timeout => 3, interval => 0.1;
ok($hit, 'cache: a hit on B');

# a node started afterwards loads it
my $c = LLMGW->new;
$c->write_conf($conf);
$c->run;
ok((wait_until {
    (ask($c, 'cached across nodes')->{headers}{'x-llm-cache'} // '') eq 'HIT'
} timeout => 3, interval => 0.1), 'cache: a new node loads it');
clean($c, 'C');

###############################################################################
# Redis slow or killed under traffic: no failure, no latency

system("redis-cli -p $rport -a $PASS --no-auth-warning DEBUG SLEEP 2 "
    . ">/dev/null 2>&1 &");
sleep 0.2;
my $t0 = time;
my $fail = 0;
for my $i (1 .. 10) {
    $r = ask($a, "while slow $i");
    $fail++ if $r->{status} != 200;
}
my $took = time - $t0;
is($fail, 0, 'Redis slow: every request served');
ok($took < 1.5, sprintf('Redis slow: 10 requests in %.2fs', $took));
ok((wait_until { $a->error_log =~ /no reply in time/ } timeout => 3),
    'Redis slow: the sync waited, not the requests');

redis_stop();
$fail = 0;
for my $i (1 .. 10) {
    $fail++ if ask($b, "after a kill $i")->{status} != 200;
}
is($fail, 0, 'Redis killed: every request served');
redis_start();

###############################################################################
# fds over reloads

sub worker_fds {
    my ($t) = @_;
    my $pid = $t->{pid};
    my @w = LLMGW::_children($pid);
    return scalar(my @f = glob "/proc/$w[0]/fd/*");
}

sleep 0.5;
my $before = worker_fds($a);
$a->reload for 1 .. 20;
sleep 0.5;
my $after = worker_fds($a);
ok($after <= $before + 1, "fds over 20 reloads: $before -> $after");

###############################################################################
# a wrong password

(my $wrong = $conf) =~ s/password=\S+/password=wrong-one/;
my $d = LLMGW->new;
$d->write_conf($wrong);
$d->run;
is(ask($d, 'no redis for me')->{status}, 200, 'wrong password: served');
sleep 1.5;    # several reconnects
my @err = $d->error_log =~ /AUTH refused/g;
is(scalar @err, 1, 'wrong password: one error line');
unlike($d->error_log, qr/wrong-one/, 'wrong password: not logged');
clean($d, 'wrong password node');

clean($b, 'B');
redis_stop();

$a->done;
