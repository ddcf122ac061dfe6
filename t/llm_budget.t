#!/usr/bin/perl

# Prices, cost and budgets (llm_prices, llm_budget, docs/budgets.md):
#
#  - cost = tokens x price, for each format, streamed or not, with and
#    without include_usage asked by the client (whose extra usage chunk
#    a client that did not ask never sees): x-llm-cost on whole answers,
#    $llm_cost in the access log for all;
#  - 40 concurrent requests against a budget that fits about 10 worst
#    cases: the costs never add up to more than the budget, later ones
#    get 402 budget_exceeded, streamed or not;
#  - a budget that cannot pay for the whole answer lowers max_tokens (the
#    provider receives the lowered value; the client sees "length");
#  - a stream cut off mid-way is charged; a provider that ignores
#    max_tokens has its stream ended at the reservation;
#  - budgets survive nginx -s reload; a new day (llm_test_time_offset)
#    starts with nothing spent;
#  - a tiny zone full of budget keys refuses a new key with 503 and keeps
#    the others;
#  - a malformed prices file fails nginx -t with the file, line and
#    reason.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

# USD per token: input 10 per million, output 20, cached 5
my %price = (input_cost_per_token => 1e-5, output_cost_per_token => 2e-5,
    cache_read_input_token_cost => 5e-6, litellm_provider => 'openai',
    mode => 'chat');
my %prices = map { $_ => { %price } }
    qw(m-priced m-priced-fault-cut m-priced-fault-ignoremax);
$prices{'sample_spec'} = { input_cost_per_token => 0,
    litellm_provider => 'one of https://docs.litellm.ai/docs/providers' };
$prices{'dall-e-3'} = { output_cost_per_pixel => 0, mode => 'image' };
# the provider's own entry wins over the bare name
$prices{'m-hint'} = { input_cost_per_token => 1, output_cost_per_token => 1 };
$prices{'p/m-hint'} = { %price };
$t->write_file('prices.json', LLMGW::json_encode(\%prices));

my $conf = <<'EOF';
http {
    llm_zone   llm 1m;
    llm_zone   tiny 32k;
    llm_route_zone llm;
    llm_prices %%TESTDIR%%/prices.json;
    %%OFFSET%%

    llm_provider p  format=openai    pass=/_llm/p/;
    llm_provider a  format=anthropic pass=/_llm/p/;
    llm_provider g  format=gemini    pass=/_llm/p/;
    llm_provider az format=azure     pass=/_llm/p/;

    map $http_authorization $team {
        ~^Bearer\ (?<k>sk-[a-z0-9-]+)$  $k;
        default                         "";
    }

    log_format spend '$http_x_id key=$llm_key cost=$llm_cost '
                     'left=$llm_budget_remaining '
                     'tokens=$llm_prompt_tokens/$llm_completion_tokens';

    server {
        listen 127.0.0.1:%%PORT_0%%;

        llm_route  m   p:m-priced;
        llm_route  am  a:m-priced;
        llm_route  gm  g:m-priced;
        llm_route  zm  az:m-priced;
        llm_route  cut p:m-priced-fault-cut;
        llm_route  acut a:m-priced-fault-cut;
        llm_route  ign p:m-priced-fault-ignoremax;
        llm_route  free p:no-price-here;
        llm_route  hint p:m-hint;
        llm_route  dated p:gpt-4o-2024-08-06;
        llm_route  reason p:o3-mini;
        llm_route  adated a:claude-sonnet-4-5-20250929;

        access_log %%TESTDIR%%/spend.log spend;

        location /v1/ {
            llm_gateway;
        }

        location /b/v1/ {
            llm_gateway;
            llm_budget llm $team 0.025 day;
            llm_budget_max_tokens 100;
        }

        location /two/v1/ {
            llm_gateway;
            llm_budget llm $team 1 month;
            llm_budget llm all 0.003 total;
        }

        location /mo/v1/ {
            llm_gateway;
            llm_budget llm $team 0.003 month;
        }

        location /tiny/v1/ {
            llm_gateway;
            llm_budget tiny $team 1 day;
        }
EOF
$conf .= proxy_location('p') . "    }\n}\n";

(my $c = $conf) =~ s/%%OFFSET%%//;
$t->write_conf($c);
$t->run;

sub near {
    my ($got, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(defined $got && abs($got - $want) < 1e-9, $name)
        or diag('got ' . ($got // 'undef') . ", want $want");
}

# the cost the usage of an answer comes to
sub cost_of {
    my ($u) = @_;
    my $cached = ($u->{prompt_tokens_details} // {})->{cached_tokens} // 0;
    return ($u->{prompt_tokens} - $cached) * 1e-5 + $cached * 5e-6
        + $u->{completion_tokens} * 2e-5;
}

my $n = 0;
sub id { return 'r' . ++$n }

sub logged {
    my ($id) = @_;
    my $l = log_line($t, 'spend.log', qr/^\Q$id\E /);
    return {} unless defined $l;
    my %f = $l =~ /(\w+)=(\S+)/g;
    return \%f;
}

###############################################################################
# cost = tokens x price, each format

for my $route (qw(m am gm zm)) {
    my $id = id();
    my $r = chat($t, $route, text => 'how much is this',
        headers => { 'X-Id' => $id });
    is($r->{status}, 200, "$route: 200");
    my $u = $r->{json}{usage};
    ok($u && $u->{prompt_tokens} > 0 && $u->{completion_tokens} > 0,
        "$route: usage");
    my $want = cost_of($u);
    near($r->{headers}{'x-llm-cost'}, $want, "$route: x-llm-cost");
    my $l = logged($id);
    near($l->{cost}, $want, "$route: \$llm_cost");

    for my $usage (0, 1) {
        $id = id();
        $r = stream($t, $route, text => 'how much is this stream',
            headers => { 'X-Id' => $id },
            $usage ? (body => { stream_options => { include_usage =>
                JSON::PP::true } }) : ());
        is($r->{status}, 200, "$route stream $usage: 200");
        ok($r->{done}, "$route stream $usage: [DONE]");
        ok(!defined $r->{headers}{'x-llm-cost'},
            "$route stream $usage: no x-llm-cost header");
        my @u = grep { ref $_->{usage} eq 'HASH' } @{ $r->{chunks} };
        my @empty = grep { ref $_->{choices} eq 'ARRAY'
            && !@{ $_->{choices} } } @{ $r->{chunks} };
        $l = logged($id);
        my ($p, $cpl) = split m{/}, $l->{tokens} // '0/0';
        if ($usage) {
            is(scalar @u, 1, "$route stream: the usage chunk asked for");
            is($u[0]{usage}{prompt_tokens}, $p, "$route stream: prompt");
            near($l->{cost}, cost_of($u[0]{usage}),
                "$route stream: \$llm_cost of the usage chunk");
        } else {
            is(scalar @u + scalar @empty, 0,
                "$route stream: no usage chunk when not asked");
            ok($p > 0 && $cpl > 0, "$route stream: tokens known");
            near($l->{cost}, $p * 1e-5 + $cpl * 2e-5,
                "$route stream: \$llm_cost");
        }
    }
}

# the built-in table, a dated id priced as its family: gpt-4o at 2.50 and
# 10 USD per million, claude-sonnet-4-5 at 3 and 15; a provider's entry
for my $c (['dated', 2.5e-6, 1e-5], ['adated', 3e-6, 1.5e-5],
    ['hint', 1e-5, 2e-5])
{
    my ($route, $in, $out) = @$c;
    my $r = chat($t, $route, text => 'what does this cost');
    my $u = $r->{json}{usage};
    near($r->{headers}{'x-llm-cost'},
        int(($u->{prompt_tokens} * $in + $u->{completion_tokens} * $out)
            * 1e6) / 1e6, "$route: priced");
}

# an unknown model costs 0, and is warned about once
for (1 .. 3) {
    my $r = chat($t, 'free', text => 'no price');
    is($r->{headers}{'x-llm-cost'}, '0', 'no price: cost 0');
}
my @w = grep { /no price for model "no-price-here"/ } split /\n/,
    $t->error_log;
is(scalar @w, 1, 'no price: one warning');

###############################################################################
# 40 concurrent requests, budget 0.025 USD/day, max_tokens 100 by default:
# a worst case is 100 output tokens (0.002 USD) and the prompt's estimate

sub concurrent {
    my ($k, $stream, $count) = @_;
    my @pids;
    for my $i (1 .. $count) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            my $r = ($stream ? \&stream : \&chat)->($t, 'm',
                uri => '/b/v1/chat/completions',
                text => 'tell me __words_60__',
                headers => { Authorization => "Bearer $k",
                    'X-Id' => "c-$k-$i" });
            my $cost = $r->{headers}{'x-llm-cost'} // '-';
            my $code = ref $r->{json} eq 'HASH' && $r->{json}{error}
                ? $r->{json}{error}{code} : '-';
            $t->write_file("conc-$k-$i", "$r->{status} $cost $code");
            exit 0;
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    return map { [split / /, $t->read_file("conc-$k-$_") // '0 - -'] }
        1 .. $count;
}

for my $stream (0, 1) {
    my $k = $stream ? 'sk-conc-s' : 'sk-conc';
    my @res = concurrent($k, $stream, 40);
    my @ok = grep { $_->[0] == 200 } @res;
    my @no = grep { $_->[0] == 402 } @res;
    is(@ok + @no, 40, "concurrent $stream: every answer 200 or 402");
    ok(@ok >= 10 && @ok < 40, "concurrent $stream: some served ("
        . scalar(@ok) . "), some refused");
    is(scalar(grep { $_->[2] eq 'budget_exceeded' } @no), scalar @no,
        "concurrent $stream: 402 budget_exceeded");

    # what was spent, from the log (streams have no x-llm-cost)
    my $sum = 0;
    for my $i (1 .. 40) {
        next unless $res[$i - 1][0] == 200;
        my $l = logged("c-$k-$i");
        $sum += $l->{cost} // 1;
    }
    ok($sum <= 0.025 + 1e-9, "concurrent $stream: spent $sum <= 0.025");
    ok($sum > 0.015, "concurrent $stream: most of the budget used");

    # then, one at a time, until nothing is left
    my $r;
    for (1 .. 40) {
        $r = chat($t, 'm', uri => '/b/v1/chat/completions',
            text => 'more __words_60__',
            headers => { Authorization => "Bearer $k" });
        last if $r->{status} != 200;
        $sum += $r->{headers}{'x-llm-cost'};
    }
    error_is($r, 402, 'insufficient_quota', 'budget_exceeded', undef,
        "concurrent $stream: then");
    ok($sum <= 0.025 + 1e-9, "concurrent $stream: then spent $sum <= 0.025");
    like($r->{json}{error}{message}, qr/budget of 0\.025 USD per day/,
        "concurrent $stream: message says the budget");
    ok(defined $r->{headers}{'x-llm-budget-remaining'}
        && $r->{headers}{'x-llm-budget-remaining'} < 0.0025,
        "concurrent $stream: remaining header");
    is($r->{headers}{'x-llm-budget-limit'}, '0.025',
        "concurrent $stream: limit header");
}

###############################################################################
# headers under a budget; max_tokens lowered to what is left

my $r = chat($t, 'm', uri => '/two/v1/chat/completions', text => 'hi',
    headers => { Authorization => 'Bearer sk-two', 'X-Id' => 'two-1' },
    reset => 1);
is($r->{status}, 200, 'two budgets: 200');
my ($req) = @{ LLMGW::mock_requests($t) };
ok($req->{json}{max_tokens} >= 16 && $req->{json}{max_tokens} < 4096,
    "two budgets: the default max_tokens lowered to what 0.003 USD pays "
    . "($req->{json}{max_tokens})");
is($r->{headers}{'x-llm-budget-limit'}, '0.003',
    'two budgets: the tightest budget in the headers');
my $left = 0.003 - $r->{headers}{'x-llm-cost'};
near($r->{headers}{'x-llm-budget-remaining'}, $left,
    'two budgets: remaining after the settlement');
near(logged('two-1')->{left}, $left, 'two budgets: $llm_budget_remaining');
is(logged('two-1')->{key}, 'sk-two', 'two budgets: $llm_key');

# about 0.0029 USD left: max_tokens 200 (0.004 USD) is lowered
$r = chat($t, 'm', uri => '/two/v1/chat/completions',
    text => 'long __words_300__', body => { max_tokens => 200 },
    headers => { Authorization => 'Bearer sk-two' }, reset => 1);
is($r->{status}, 200, 'lowered: 200');
($req) = @{ LLMGW::mock_requests($t) };
my $mt = $req->{json}{max_tokens};
ok($mt >= 16 && $mt < 200, "lowered: provider asked for $mt tokens");
is($r->{json}{choices}[0]{finish_reason}, 'length', 'lowered: length');
ok($r->{headers}{'x-llm-budget-remaining'} >= 0, 'lowered: not overrun');

# a reasoning model gets max_completion_tokens, which it alone accepts
$r = chat($t, 'reason', uri => '/b/v1/chat/completions', text => 'think',
    headers => { Authorization => 'Bearer sk-reason' }, reset => 1);
is($r->{status}, 200, 'reasoning model: 200');
($req) = @{ LLMGW::mock_requests($t) };
is($req->{json}{max_completion_tokens}, 100,
    'reasoning model: max_completion_tokens');
ok(!exists $req->{json}{max_tokens}, 'reasoning model: no max_tokens');

$r = chat($t, 'm', uri => '/two/v1/chat/completions', text => 'again',
    headers => { Authorization => 'Bearer sk-other' }, reset => 1);
error_is($r, 402, 'insufficient_quota', 'budget_exceeded', undef,
    'shared budget: another key refused by "all"');
is(scalar @{ LLMGW::mock_requests($t) }, 0, 'shared budget: provider not asked');

# an empty key is not accounted
$r = chat($t, 'm', uri => '/b/v1/chat/completions', text => 'anonymous',
    reset => 1);
is($r->{status}, 200, 'empty key: 200');
ok(!defined $r->{headers}{'x-llm-budget-limit'}, 'empty key: no budget');
($req) = @{ LLMGW::mock_requests($t) };
ok(!exists $req->{json}{max_tokens}, 'empty key: request unchanged');

###############################################################################
# streams cut off are charged; a provider ignoring max_tokens is stopped

for my $route (qw(cut acut)) {
    my $id = id();
    $r = stream($t, $route, uri => '/b/v1/chat/completions',
        text => '__words_50__',
        headers => { Authorization => "Bearer sk-$route", 'X-Id' => $id });
    is($r->{status}, 200, "$route: 200");
    my $l = logged($id);
    ok(($l->{cost} // 0) > 0, "$route: cut stream charged ($l->{cost})");
}

my $id = id();
$r = stream($t, 'ign', uri => '/b/v1/chat/completions',
    text => '__words_2000__',
    headers => { Authorization => 'Bearer sk-ign', 'X-Id' => $id });
is($r->{status}, 200, 'ignoremax: 200');
my @err = grep { ref $_->{error} eq 'HASH' } @{ $r->{chunks} };
is($err[0]{error}{code}, 'budget_exceeded', 'ignoremax: error event');
ok(length($r->{text}) < 2000 * 4, 'ignoremax: stream ended early');
my $l = logged($id);
ok($l->{cost} <= 0.025, "ignoremax: charged at most the budget ($l->{cost})");
like($t->error_log, qr/went on past the \d+ tokens reserved/,
    'ignoremax: logged');

###############################################################################
# a tiny zone full of keys refuses a new one and keeps the others

my ($k, $full);
for my $i (1 .. 400) {
    $r = chat($t, 'm', uri => '/tiny/v1/chat/completions', text => 'x',
        headers => { Authorization => "Bearer sk-tiny-$i" });
    if ($r->{status} != 200) {
        $full = $i;
        last;
    }
}
ok($full && $full > 5, "tiny zone: full after " . ($full // 'never'));
error_is($r, 503, 'server_error', 'budget_unavailable', undef,
    'tiny zone: a new key');
$r = chat($t, 'm', uri => '/tiny/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-tiny-1' });
is($r->{status}, 200, 'tiny zone: an old key still served');
ok($r->{headers}{'x-llm-budget-remaining'} < 1, 'tiny zone: and counted');
like($t->error_log, qr/llm_zone "tiny" is full/, 'tiny zone: logged');

###############################################################################
# reload keeps what was spent; a new day starts with nothing spent

# the request refused last, again (a smaller one could still fit)
$r = chat($t, 'm', uri => '/b/v1/chat/completions',
    text => 'more __words_60__',
    headers => { Authorization => 'Bearer sk-conc' });
is($r->{status}, 402, 'before reload: refused');

# a monthly budget used up
for (1 .. 5) {
    $r = chat($t, 'm', uri => '/mo/v1/chat/completions',
        text => '__words_60__', headers => { Authorization => 'Bearer sk-mo' });
    last if $r->{status} != 200;
}
is($r->{status}, 402, 'month: used up');

$t->reload;
$r = chat($t, 'm', uri => '/b/v1/chat/completions',
    text => 'more __words_60__',
    headers => { Authorization => 'Bearer sk-conc' });
is($r->{status}, 402, 'after reload: still refused');
$r = chat($t, 'm', uri => '/two/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-three' });
is($r->{status}, 402, 'after reload: total budget still spent');

($c = $conf) =~ s/%%OFFSET%%/llm_test_time_offset 1d;/;
$t->write_conf($c);
$t->reload;
$r = chat($t, 'm', uri => '/b/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-conc' });
is($r->{status}, 200, 'next day: served again');
is($r->{headers}{'x-llm-budget-remaining'} + $r->{headers}{'x-llm-cost'},
    0.025, 'next day: the whole budget');
$r = chat($t, 'm', uri => '/two/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-three' });
is($r->{status}, 402, 'next day: a total budget does not renew');

($c = $conf) =~ s/%%OFFSET%%/llm_test_time_offset 32d;/;
$t->write_conf($c);
$t->reload;
$r = chat($t, 'm', uri => '/two/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-two' });
is($r->{status}, 402, 'next month: "all" (total) still refuses');
$r = chat($t, 'm', uri => '/mo/v1/chat/completions', text => 'x',
    headers => { Authorization => 'Bearer sk-mo' });
is($r->{status}, 200, 'next month: a monthly budget renews');

###############################################################################
# nginx -t and the prices file

$t->write_file('bad.json', qq({\n  "m": {\n    "input_cost_per_token": 1e-6,\n)
    . qq(    "output_cost_per_token": oops\n  }\n}\n));
my ($rc, $out) = $t->nginx_t(<<'EOF');
http { llm_prices %%TESTDIR%%/bad.json; }
EOF
isnt($rc, 0, 'bad prices: nginx -t fails');
like($out, qr{llm_prices: \S+/bad\.json:4: }, 'bad prices: file and line');

$t->write_file('bad2.json', qq({\n  "a": {"input_cost_per_token": 1},\n)
    . qq(  "b": {"input_cost_per_token": "0.1"}\n}\n));
($rc, $out) = $t->nginx_t(<<'EOF');
http { llm_prices %%TESTDIR%%/bad2.json; }
EOF
isnt($rc, 0, 'bad cost: nginx -t fails');
like($out, qr{bad2\.json:3: model "b": input_cost_per_token is not a number},
    'bad cost: file, line and reason');

($rc, $out) = $t->nginx_t(<<'EOF');
http {
    llm_zone z 1m;
    server { location / { llm_budget z $x 12.5.3 month; } }
}
EOF
like($out, qr/invalid amount "12\.5\.3"/, 'bad amount refused');

($rc, $out) = $t->nginx_t(<<'EOF');
http { server { location / { llm_budget nope $x 1 month; } } }
EOF
like($out, qr/unknown llm_zone "nope"/, 'unknown zone refused');

$t->done;
