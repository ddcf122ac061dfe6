#!/usr/bin/perl

# Passive health and cool-downs of the targets of a route (llm_route
# max_fails= fail_timeout=, docs/directives.md), one worker, no llm_zone:
# the state is the worker's own (t/llm_zone.t has two workers sharing a
# zone).
#
#  - a target that failed max_fails times is skipped until fail_timeout
#    has passed since its last failure, then tried again (default
#    max_fails=1 fail_timeout=10s, keyed by provider:model across routes);
#  - the only target of a route, failed, is tried anyway rather than
#    refused;
#  - a target that answered 429 with Retry-After cools down: it is skipped
#    for the pause, then tried again.
#
# The end of a pause is waited for with a bounded poll (the route asked
# every 50 ms until the target has its attempt again), checked on both
# sides: not before the pause was over, and soon after it (1.5 s of
# margin).  While the cool-down of 1s runs, so does the fail_timeout of 2s.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

$t->write_conf(<<'EOF' . proxy_location('p') . "    }\n}\n");
http {
    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  h    p:fault-500-health  p:good backup;
            llm_route  c    p:fault-429-cool max_fails=0  p:good backup;
            llm_route  ph   p:fault-500-ph max_fails=2 fail_timeout=2s
                            p:good-ph backup;
            llm_route  dn   p:fault-500-dn;
        }
EOF
$t->run;

chat_defaults($t, text => 'stay healthy');

sub attempts { return $_[0]{headers}{'x-llm-attempts'} // '' }

# ask $route until its first target is tried again (two attempts), for at
# most $timeout seconds; returns the last answer and when it came
sub until_tried {
    my ($route, $timeout) = @_;
    my $r;
    wait_until {
        $r = chat($t, $route, reset => 1);
        attempts($r) eq '2';
    } timeout => $timeout;
    return ($r, time);
}

###############################################################################
# default max_fails=1 fail_timeout=10s: a failed target is skipped

my $r = chat($t, 'h', reset => 1);
is(attempts($r), '2', 'health: first request, 2 attempts');
$r = chat($t, 'h', reset => 1);
is($r->{status}, 200, 'health: second request');
is(attempts($r), '1', 'health: failed target skipped');
is(join(' ', asked($t)), 'good', 'health: only the good target asked');

###############################################################################
# max_fails=2 fail_timeout=2s

mock_reset($t);
$r = chat($t, 'ph');
is(attempts($r), '2', 'health: 1st failure, fallback');
my $failed = time;
$r = chat($t, 'ph');
is(attempts($r), '2',
    'health: 2nd failure: still tried after one failure (max_fails=2)');
is(join(' ', asked($t)), 'fault-500-ph good-ph fault-500-ph good-ph',
    'health: two failures reached the provider');

mock_reset($t);
for (1 .. 3) {
    $r = chat($t, 'ph');
    is($r->{status}, 200, "health: request $_ after max_fails: 200");
    is(attempts($r), '1', "health: request $_ after max_fails: one attempt");
}
is(join(' ', asked($t)), 'good-ph good-ph good-ph',
    'health: no request reaches the failed target within fail_timeout');

###############################################################################
# cooling: a 429 with Retry-After: 1 is skipped for a second

my $paused = time;
$r = chat($t, 'c', reset => 1);
is(attempts($r), '2', 'cooling: first request');
$r = chat($t, 'c', reset => 1);
is(join(' ', asked($t)), 'good', 'cooling: the 429 target skipped');

($r, my $cooled) = until_tried('c', 5);
is(join(' ', asked($t)), 'fault-429-cool good',
    'cooling: tried again after Retry-After');
# the pause starts when the gateway reads the 429, after $paused: 0.1s of
# margin for the clocks' rounding below, 1.5s above (a request every 50ms)
cmp_ok($cooled - $paused, '>=', 0.9,
    'cooling: not tried again before the second was over');
cmp_ok($cooled - $paused, '<', 2.5, 'cooling: tried again soon after it');

###############################################################################
# back to max_fails=2 fail_timeout=2s: tried again once fail_timeout has
# passed since the second failure

($r, my $back) = until_tried('ph', 6);
is(attempts($r), '2', 'health: after fail_timeout the target is tried again');
is(join(' ', asked($t)), 'fault-500-ph good-ph',
    'health: after fail_timeout: the provider asked');
cmp_ok($back - $failed, '>=', 1.9,
    'health: not tried again before fail_timeout was over');
cmp_ok($back - $failed, '<', 3.5, 'health: tried again soon after it');

###############################################################################
# the only target, failed: tried anyway rather than refused

mock_reset($t);
$r = chat($t, 'dn');
is($r->{status}, 500, 'single failing target: its error');
$r = chat($t, 'dn');
is($r->{status}, 500, 'single failing target, marked down: tried anyway');
is(join(' ', asked($t)), 'fault-500-dn fault-500-dn',
    'single failing target: asked both times');

$t->done;
