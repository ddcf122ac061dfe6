#!/usr/bin/perl

# Target selection within a route (llm_route): smooth weighted round-robin
# over the primary targets, backups only when no primary is left, the
# position kept per route of each location.  One worker, no llm_zone: the
# state is the worker's own (t/llm_zone.t has two workers sharing a zone;
# passive health and cool-downs: t/llm_health.t).
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
            llm_route  w    p:a weight=3  p:b;
            llm_route  w3   p:x weight=5  p:y  p:z;
            llm_route  bk   p:a2  p:b2  p:c2 backup;
            llm_route  same p:sa1 weight=3  p:sa2;
        }

        # a route of the same name in another location, other targets
        location /v2/ {
            llm_gateway;
            llm_route  same p:sb1  p:sb2 weight=3;
        }
EOF
$t->run;

chat_defaults($t, text => 'spread');

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
    my $r = chat($t, 'w');
    $ok++ if $r->{status} == 200
        && ($r->{headers}{'x-llm-attempts'} // '') eq '1';
}
is($ok, 200, 'weighted: 200 answers, one attempt each');

my @seq = asked($t);
is_deeply(count(@seq), { a => 150, b => 50 }, 'weighted 3:1: exactly 150/50');
is(join('', @seq[0 .. 11]), 'aabaaabaaaba', 'weighted 3:1: smooth order');
my $windows = 0;
for (my $i = 0; $i + 4 <= @seq; $i += 4) {
    $windows++ if join('', sort @seq[$i .. $i + 3]) eq 'aaab';
}
is($windows, 50, 'weighted 3:1: every 4 picks hold 3 a and 1 b');

# nginx's example: weights 5 1 1 give a a b a c a a
mock_reset($t);
chat($t, 'w3') for 1 .. 70;
@seq = asked($t);
is_deeply(count(@seq), { x => 50, y => 10, z => 10 },
    'weighted 5:1:1: exactly 50/10/10');
is(join('', @seq[0 .. 13]), 'xxyxzxx' x 2, 'weighted 5:1:1: smooth order');

###############################################################################
# a backup is used only when a primary fails

mock_reset($t);
$ok = 0;
for (1 .. 20) {
    my $r = chat($t, 'bk');
    $ok++ if $r->{status} == 200;
}
is($ok, 20, 'backup route: 20 answers');
is_deeply(count(asked($t)), { a2 => 10, b2 => 10 },
    'healthy primaries: the backup is never asked');

###############################################################################
# the round-robin position belongs to the route of its location, as it
# belongs to an upstream block: a route of the same name elsewhere, with
# other targets and weights, must keep its own spread

mock_reset($t);
for (1 .. 20) {
    chat($t, 'same');
    chat($t, 'same', uri => '/v2/chat/completions');
}
my $c = count(asked($t));
is_deeply($c, { sa1 => 15, sa2 => 5, sb1 => 5, sb2 => 15 },
    'same route name in two locations: each its own 3:1 spread')
    or diag(join ' ', map { "$_=$c->{$_}" } sort keys %$c);

$t->done;
