#!/usr/bin/perl

# Target selection within a route (llm_route): smooth weighted round-robin
# over the primary targets, backups only when no primary is left, passive
# health (max_fails / fail_timeout).  One worker, no llm_zone: the state is
# the worker's own (t/llm_zone.t has two workers sharing a zone).
#
# The bound: nginx's smooth weighted round-robin is deterministic, so with
# weights 3:1 every 4 consecutive picks hold exactly 3 of the first target
# and 1 of the second (the order is a a b a), and 200 requests give
# exactly 150/50: the tolerance is zero, not a statistical one.

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
http {
    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  w    p:a weight=3  p:b;
            llm_route  w3   p:x weight=5  p:y  p:z;
            llm_route  bk   p:a2  p:b2  p:c2 backup;
            llm_route  ph   p:fault-500-ph max_fails=2 fail_timeout=2s
                            p:good-ph backup;
            llm_route  dn   p:fault-500-dn;
            llm_route  same p:sa1 weight=3  p:sa2;
        }

        # a route of the same name in another location, other targets
        location /v2/ {
            llm_gateway;
            llm_route  same p:sb1  p:sb2 weight=3;
        }
EOF
$t->run;

my $msgs = [{ role => 'user', content => 'spread' }];

sub chat {
    my ($model, $prefix) = @_;
    return http($t, $t->port(0), 'POST',
        ($prefix // '/v1') . '/chat/completions', {},
        { model => $model, messages => $msgs });
}

sub asked {
    return map { $_->{json}{model} // '?' } @{ mock_requests($t) };
}

sub count {
    my %c;
    $c{$_}++ for @_;
    return \%c;
}

###############################################################################
# weight=3 against weight 1, 200 requests

mock_reset($t);
my $ok = 0;
for (1 .. 200) {
    my $r = chat('w');
    $ok++ if $r->{status} == 200
        && ($r->{headers}{'x-llm-attempts'} // '') eq '1';
}
is($ok, 200, 'weighted: 200 answers, one attempt each');

my @seq = asked();
is_deeply(count(@seq), { a => 150, b => 50 }, 'weighted 3:1: exactly 150/50');
is(join('', @seq[0 .. 11]), 'aabaaabaaaba', 'weighted 3:1: smooth order');
my $windows = 0;
for (my $i = 0; $i + 4 <= @seq; $i += 4) {
    $windows++ if join('', sort @seq[$i .. $i + 3]) eq 'aaab';
}
is($windows, 50, 'weighted 3:1: every 4 picks hold 3 a and 1 b');

# nginx's example: weights 5 1 1 give a a b a c a a
mock_reset($t);
chat('w3') for 1 .. 70;
@seq = asked();
is_deeply(count(@seq), { x => 50, y => 10, z => 10 },
    'weighted 5:1:1: exactly 50/10/10');
is(join('', @seq[0 .. 13]), 'xxyxzxx' x 2, 'weighted 5:1:1: smooth order');

###############################################################################
# a backup is used only when a primary fails

mock_reset($t);
$ok = 0;
for (1 .. 20) {
    my $r = chat('bk');
    $ok++ if $r->{status} == 200;
}
is($ok, 20, 'backup route: 20 answers');
is_deeply(count(asked()), { a2 => 10, b2 => 10 },
    'healthy primaries: the backup is never asked');

###############################################################################
# passive health: max_fails=2 fail_timeout=2s

mock_reset($t);
my $r = chat('ph');
is($r->{headers}{'x-llm-attempts'}, '2', 'health: 1st failure, fallback');
$r = chat('ph');
is($r->{headers}{'x-llm-attempts'}, '2',
    'health: 2nd failure: still tried after one failure (max_fails=2)');
is(join(' ', asked()), 'fault-500-ph good-ph fault-500-ph good-ph',
    'health: two failures reached the provider');

mock_reset($t);
for (1 .. 3) {
    $r = chat('ph');
    is($r->{status}, 200, "health: request $_ after max_fails: 200");
    is($r->{headers}{'x-llm-attempts'}, '1',
        "health: request $_ after max_fails: one attempt");
}
is(join(' ', asked()), 'good-ph good-ph good-ph',
    'health: no request reaches the failed target within fail_timeout');

sleep 2.1;

mock_reset($t);
$r = chat('ph');
is($r->{headers}{'x-llm-attempts'}, '2',
    'health: after fail_timeout the target is tried again');
is(join(' ', asked()), 'fault-500-ph good-ph',
    'health: after fail_timeout: the provider asked');

# the only target, failed: tried anyway rather than refused
mock_reset($t);
$r = chat('dn');
is($r->{status}, 500, 'single failing target: its error');
$r = chat('dn');
is($r->{status}, 500, 'single failing target, marked down: tried anyway');
is(join(' ', asked()), 'fault-500-dn fault-500-dn',
    'single failing target: asked both times');

###############################################################################
# the round-robin position belongs to the route of its location, as it
# belongs to an upstream block: a route of the same name elsewhere, with
# other targets and weights, must keep its own spread

mock_reset($t);
for (1 .. 20) {
    chat('same', '/v1');
    chat('same', '/v2');
}
my $c = count(asked());
is_deeply($c, { sa1 => 15, sa2 => 5, sb1 => 5, sb2 => 15 },
    'same route name in two locations: each its own 3:1 spread')
    or diag(join ' ', map { "$_=$c->{$_}" } sort keys %$c);

$t->done;
