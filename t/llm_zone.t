#!/usr/bin/perl

# Routing state in the llm_zone shared memory zone, with two workers:
# the round-robin position and the cool-downs asked for by providers
# (Retry-After, retry-after-ms, OpenAI's x-ratelimit-reset-*) are seen by
# every worker and survive "nginx -s reload"; a route whose targets are all
# cooling down is answered 429 with Retry-After by the gateway itself;
# llm_retry_after_max caps a long pause.
#
# The listen socket has "reuseport", so that the kernel spreads the
# connections over both workers (by a hash of the client's port); the
# access log records the worker's $pid, and the checks make sure both
# workers served requests.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use LLMGW;

my $t = LLMGW->new;
my $mock = $t->run_mock;

$t->write_conf(<<'EOF' . proxy_location('p') . "    }\n}\n");
worker_processes 2;

http {
    llm_zone  llm 1m;

    log_format llm '$pid|$llm_attempts|$status';

    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        access_log %%TESTDIR%%/llm.log llm;

        location /v1/ {
            llm_gateway;
            llm_route  w     p:a weight=3  p:b;
            llm_route  c     p:fault-longpause-c max_fails=0  p:good backup;
            llm_route  c1    p:fault-429-c1 max_fails=0  p:good backup;
            llm_route  allc  p:fault-longpause-a max_fails=0
                             p:fault-longpause-b max_fails=0 backup;
            llm_route  solo  p:fault-longpause-solo max_fails=0;
            llm_route  ms    p:fault-waitms-ms max_fails=0  p:good backup;
            llm_route  rl    p:fault-ratelimit-rl max_fails=0  p:good backup;
            llm_route  dt    p:fault-pausedate-dt max_fails=0  p:good backup;
        }

        location /cap/v1/ {
            llm_gateway;
            llm_retry_after_max 1s;
            llm_route  cap   p:fault-longpause-cap max_fails=0  p:good backup;
        }
EOF
$t->run;

my $msgs = [{ role => 'user', content => 'share' }];

sub chat {
    my ($model, $prefix) = @_;
    return http($t, $t->port(0), 'POST',
        ($prefix // '/v1') . '/chat/completions', {},
        { model => $model, messages => $msgs });
}

sub asked {
    return map { $_->{json}{model} // '?' } @{ mock_requests($t) };
}

sub log_lines {
    my $c = $t->read_file('llm.log') // '';
    return split /\n/, $c;
}

# pids of the workers that logged lines since line $from
sub pids_since {
    my ($from, $n) = @_;
    # the log line may be written just after the client saw the answer
    for (1 .. 100) {
        last if log_lines() >= $from + $n;
        sleep 0.02;
    }
    my @l = log_lines();
    my %p = map { (split /\|/)[0] => 1 } @l[$from .. $#l];
    return sort keys %p;
}

###############################################################################
# smooth weighted round-robin shared by two workers: the position lives in
# the zone (under its lock), so 200 requests spread over both workers still
# give exactly 150/50, in the order a a b a; there is no tolerance

mock_reset($t);
my $from = log_lines();
my $ok = 0;
for (1 .. 200) {
    $ok++ if chat('w')->{status} == 200;
}
is($ok, 200, 'two workers: 200 answers');
my @pids = pids_since($from, 200);
is(scalar @pids, 2, 'two workers: both served requests');
my @seq = asked();
my %c;
$c{$_}++ for @seq;
is($c{a}, 150, 'two workers, shared zone: a exactly 150');
is($c{b}, 50, 'two workers, shared zone: b exactly 50');
is(join('', @seq), 'aaba' x 50, 'two workers: the smooth order, unbroken');

###############################################################################
# a pause asked by one target is seen by both workers

mock_reset($t);
my $r = chat('c');
is($r->{status}, 200, 'pause asked: the backup answers');
is($r->{headers}{'x-llm-attempts'}, '2', 'pause asked: 2 attempts');
like($t->error_log, qr/provider "p" model "fault-longpause-c" asked for a pause, cooling down for 30000ms/,
    'pause asked: cooling down for Retry-After: 30');

mock_reset($t);
$from = log_lines();
my ($good, $one) = (0, 0);
for (1 .. 20) {
    $r = chat('c');
    $good++ if $r->{status} == 200;
    $one++ if ($r->{headers}{'x-llm-attempts'} // '') eq '1'
        && ($r->{headers}{'x-llm-model'} // '') eq 'good';
}
is($good, 20, 'cooling target: 20 answers');
is($one, 20, 'cooling target: skipped, one attempt each');
is(join(' ', sort { $a cmp $b } keys %{{ map { $_ => 1 } asked() }}), 'good',
    'cooling target: no request reached it, from either worker');
is(scalar(() = pids_since($from, 20)), 2,
    'cooling target: both workers served those requests');

# the mock's plain 429 (retry-after: 1): skipped by the next requests,
# whichever worker serves them, for a second
mock_reset($t);
$r = chat('c1');
is($r->{headers}{'x-llm-attempts'}, '2', 'retry-after 1: fallback');
$one = 0;
for (1 .. 10) {
    $one++ if (chat('c1')->{headers}{'x-llm-attempts'} // '') eq '1';
}
is($one, 10, 'retry-after 1: skipped by the next 10 requests');
is(join(' ', grep { $_ ne 'good' } asked()), 'fault-429-c1',
    'retry-after 1: asked once');

###############################################################################
# every target cooling: 429 from the gateway, no provider asked

mock_reset($t);
$r = chat('allc');
is($r->{headers}{'x-llm-attempts'}, '2', 'all cooling: first request tried both');
is($r->{status}, 429,
    'all cooling: first request: every target rate limited, their 429');
is($r->{headers}{'retry-after'}, '30',
    'all cooling: first request: the provider\'s Retry-After passed on');
is(join(' ', asked()), 'fault-longpause-a fault-longpause-b',
    'all cooling: first request: both asked once');

mock_reset($t);
$from = log_lines();
my ($n429, $ra, $noatt) = (0, 0, 0);
for (1 .. 12) {
    $r = chat('allc');
    $n429++ if $r->{status} == 429
        && ($r->{json}{error}{code} // '') eq 'rate_limit_exceeded';
    my $v = $r->{headers}{'retry-after'} // '';
    $ra++ if $v =~ /^\d+$/ && $v >= 28 && $v <= 30;
    $noatt++ if !defined $r->{headers}{'x-llm-attempts'}
        && !defined $r->{headers}{'x-llm-provider'};
}
is($n429, 12, 'all cooling: 429 rate_limit_exceeded from the gateway');
is($ra, 12, 'all cooling: Retry-After is the shortest wait (~30s)');
is($noatt, 12, 'all cooling: no attempt, no provider named');
is(scalar asked(), 0, 'all cooling: no provider asked');
like($t->error_log, qr/every target of "allc" is cooling down, answered 429/,
    'all cooling: logged');

# a single target: its own 429 first (with its pause headers), then the
# gateway's
mock_reset($t);
$r = chat('solo');
is($r->{status}, 429, "single target: the provider's 429");
is($r->{headers}{'retry-after'}, '30', "single target: provider's Retry-After");
is($r->{headers}{'x-llm-attempts'}, '1', 'single target: one attempt');
$r = chat('solo');
is($r->{status}, 429, "single target cooling: the gateway's 429");
like($r->{headers}{'retry-after'} // '', qr/^(29|30)$/,
    'single target cooling: Retry-After');
like($r->{json}{error}{message} // '', qr/asked for a pause/,
    'single target cooling: message');
is(join(' ', asked()), 'fault-longpause-solo',
    'single target cooling: the provider asked once');

###############################################################################
# other forms of pause requests

mock_reset($t);
$r = chat('ms');
is($r->{headers}{'x-llm-attempts'}, '2', 'retry-after-ms: fallback');
$r = chat('ms');
is($r->{headers}{'x-llm-attempts'}, '1', 'retry-after-ms: then skipped');
like($t->error_log, qr/model "fault-waitms-ms" asked for a pause, cooling down for 1500ms/,
    'retry-after-ms: 1500ms');

mock_reset($t);
$r = chat('rl');
is($r->{headers}{'x-llm-attempts'}, '2', 'x-ratelimit-reset-*: fallback');
$r = chat('rl');
is($r->{headers}{'x-llm-attempts'}, '1', 'x-ratelimit-reset-*: skipped');
like($t->error_log, qr/model "fault-ratelimit-rl" asked for a pause, cooling down for 2000ms/,
    'x-ratelimit-reset-requests 2s with none remaining; the tokens limit'
    . ' (6m0s, not used up) ignored');
is(join(' ', asked()), 'fault-ratelimit-rl good good',
    'x-ratelimit-reset-*: the provider asked once');

mock_reset($t);
$r = chat('dt');
is($r->{headers}{'x-llm-attempts'}, '2', 'Retry-After date: fallback');
$r = chat('dt');
is($r->{headers}{'x-llm-attempts'}, '1', 'Retry-After date: skipped');
like($t->error_log, qr/model "fault-pausedate-dt" asked for a pause, cooling down for [45]000ms/,
    'Retry-After as an HTTP date, 5s ahead');

###############################################################################
# llm_retry_after_max 1s caps Retry-After: 30

mock_reset($t);
$r = chat('cap', '/cap/v1');
is($r->{headers}{'x-llm-attempts'}, '2', 'capped: first request');
like($t->error_log, qr/model "fault-longpause-cap" asked for a pause, cooling down for 1000ms/,
    'capped: cooling down for 1000ms, not 30s');
$r = chat('cap', '/cap/v1');
is($r->{headers}{'x-llm-attempts'}, '1', 'capped: skipped at once');
sleep 1.1;
$r = chat('cap', '/cap/v1');
is($r->{headers}{'x-llm-attempts'}, '2', 'capped: tried again after 1s');
is(join(' ', asked()), 'fault-longpause-cap good good fault-longpause-cap good',
    'capped: the provider asked twice');

###############################################################################
# nginx -s reload: the zone keeps the cool-downs and the round-robin
# position

mock_reset($t);
chat('w') for 1 .. 2;                         # a a of a a b a

my @old = @pids;
ok($t->reload, 'reload');
$from = log_lines();

chat('w') for 1 .. 2;                         # kept: b a; lost: a a
is(join(' ', asked()), 'a a b a',
    'reload: the round-robin position goes on');

mock_reset($t);
($good, $one) = (0, 0);
for (1 .. 20) {
    $r = chat('c');
    $good++ if $r->{status} == 200;
    $one++ if ($r->{headers}{'x-llm-attempts'} // '') eq '1';
}
is($good, 20, 'reload: answers');
is($one, 20, 'reload: the cooling target is still skipped');
is(join(' ', sort { $a cmp $b } keys %{{ map { $_ => 1 } asked() }}), 'good',
    'reload: no request reached it');

$r = chat('allc');
is($r->{status}, 429, "reload: every target still cooling: gateway's 429");

my @new = pids_since($from, 23);
is(scalar @new, 2, 'reload: both new workers served requests');
ok(!(grep { my $p = $_; grep { $_ eq $p } @old } @new),
    'reload: by new workers');

$t->done;
