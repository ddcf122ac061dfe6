#!/usr/bin/perl

# The zone API beyond routing.
#
# First the zone itself, as a C program built from ngx_http_llm_zone.c
# and t/zone/stubs.c (skipped without a C compiler or the configured nginx
# tree of ./build.sh): pinned kinds survive eviction pressure and a full
# zone refuses a new pinned key, evictable kinds evict their own least
# recently used entries first, expiry on access and on insert, the walk,
# generations, reuse on reload and a clean start when the zone's header
# is of another layout, the key length bound.
#
# Then through nginx: llm_route_zone names the zone of the routing state
# (and is required when there are several zones), a tiny zone under
# pressure evicts the least recently used round-robin positions with
# nginx's own slab allocator, a reload that changes a zone's size starts
# that zone empty with a notice, a route line longer than a zone key
# keeps its round-robin position.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Basename qw(dirname);
use LLMGW;

my $t = LLMGW->new;

###############################################################################
# the C unit test

SKIP: {
    my $src = $ENV{NGINX_SRC} // dirname($t->module) . '/nginx-src';
    my $cc = $ENV{CC} // 'cc';
    my $mod = "$FindBin::Bin/../ngx_http_llm_gateway_module";
    my $dir = "$FindBin::Bin/zone";
    my $bin = $t->testdir . '/zone_test';

    skip "no configured nginx tree at $src (./build.sh)", 1
        unless -f "$src/objs/ngx_auto_config.h";
    skip "no C compiler ($cc)", 1
        unless system("$cc --version >/dev/null 2>&1") == 0;

    my $inc = join ' ', map { "-I'$_'" } "$src/src/core", "$src/src/event",
        "$src/src/event/modules", "$src/src/os/unix", "$src/objs", $mod,
        $dir;

    my $out = `$cc -g -O1 -Wall -Werror $inc -o '$bin' '$dir/zone_test.c' \\
        '$dir/stubs.c' '$mod/ngx_http_llm_zone.c' 2>&1`;
    is($?, 0, 'unit test: compiled') or diag($out), skip 'not compiled', 1;

    $out = `'$bin' 2>&1`;
    my $rc = $?;

    for my $l (split /\n/, $out) {
        if ($l =~ /^(not )?ok - (.*)$/) {
            ok(!$1, "unit: $2");
        } elsif ($l ne 'done') {
            diag($l);
        }
    }

    is($rc, 0, 'unit test: exit 0');
    like($out, qr/^done$/m, 'unit test: ran to its end');
}

###############################################################################
# through nginx

my $mock = $t->run_mock;

my $msgs = [{ role => 'user', content => 'zone' }];

sub chat {
    my ($model, $prefix) = @_;
    return http($t, $t->port(0), 'POST',
        ($prefix // '/v1') . '/chat/completions', {},
        { model => $model, messages => $msgs });
}

sub asked {
    return join ' ', map { $_->{json}{model} // '?' } @{ mock_requests($t) };
}

# several zones: llm_route_zone is required, and must name one

my $two = <<'EOF';
http {
    llm_zone  cache  1m;
    llm_zone  state  1m;
    #RZ#
    llm_provider p format=openai pass=/_llm/p/;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location /v1/ { llm_gateway; llm_route w p:a weight=3 p:b; }
    }
}
EOF

(my $c = $two) =~ s/#RZ#//;
my ($rc, $out) = $t->nginx_t($c);
isnt($rc, 0, 'two zones, no llm_route_zone: refused');
like($out, qr/\[emerg\] several llm_zone are defined: llm_route_zone must name the one for routing state/,
    'two zones, no llm_route_zone: the message');

($c = $two) =~ s/#RZ#/llm_route_zone nosuch;/;
($rc, $out) = $t->nginx_t($c);
isnt($rc, 0, 'llm_route_zone of no zone: refused');
like($out, qr/\[emerg\] llm_route_zone "nosuch": no such llm_zone/,
    'llm_route_zone of no zone: the message');

($c = $two) =~ s/#RZ#/llm_route_zone state;/;
($rc, $out) = $t->nginx_t($c);
is($rc, 0, 'llm_route_zone state: valid') or diag($out);

($c = $two) =~ s/#RZ#/llm_route_zone state; llm_route_zone cache;/;
($rc, $out) = $t->nginx_t($c);
like($out, qr/"llm_route_zone" directive is duplicate/,
    'llm_route_zone twice: refused');

# the routing state lives in the zone llm_route_zone names: changing the
# other zone's size on reload leaves it, changing its own starts it empty

my $conf = <<'EOF' . proxy_location('p') . "    }\n}\n";
http {
    llm_zone        cache  #CACHE#;
    llm_zone        state  #STATE#;
    llm_route_zone  state;

    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  w     p:a weight=3  p:b;
            #LONG#
        }
EOF

# a route line longer than a zone key (1024 bytes): its backups make it
# long, the round-robin is between a and b
my $long = 'llm_route  long  p:a weight=3  p:b'
    . join('', map { ' p:backup-model-with-a-long-name-number-' . $_
        . '-xxxxxxxxxxxxxxxxxxxxxxxx backup' } 1 .. 16) . ';';
ok(length($long) > 1100, 'a route line of ' . length($long) . ' bytes');

sub conf {
    my (%o) = @_;
    my $c = $conf;
    $c =~ s/#CACHE#/$o{cache} \/\/ '1m'/e;
    $c =~ s/#STATE#/$o{state} \/\/ '1m'/e;
    $c =~ s/#LONG#/$long/;
    return $c;
}

$t->write_conf(conf());
$t->run;

mock_reset($t);
chat('w') for 1 .. 2;
is(asked(), 'a a', 'w: a a of a a b a');

$t->write_conf(conf(cache => '2m'));
ok($t->reload, 'reload, the cache zone resized');
like($t->error_log, qr/\[notice\] .*llm_zone "cache" changed its size from 1024k to 2048k, it starts empty/,
    'the resized zone: a notice');
unlike($t->error_log, qr/llm_zone "state" changed/, 'the other: none');

mock_reset($t);
chat('w') for 1 .. 2;
is(asked(), 'b a', 'the routing zone kept its state: b a');

$t->write_conf(conf(cache => '2m', state => '2m'));
ok($t->reload, 'reload, the routing zone resized');
like($t->error_log, qr/llm_zone "state" changed its size from 1024k to 2048k, it starts empty/,
    'the routing zone: a notice');

mock_reset($t);
chat('w') for 1 .. 2;
is(asked(), 'a a', 'the routing zone started empty: a a again');

# a long line keeps its position like any other

mock_reset($t);
chat('long') for 1 .. 8;
is(asked(), 'a a b a a a b a', 'a route line over 1024 bytes: exact a a b a');

$t->stop;

###############################################################################
# a tiny zone (8 pages, the least llm_zone takes) under pressure: 400
# routes, each used once, hold more round-robin positions than it has room
# for; the least recently used are evicted, the recent ones stay

my $tiny = join "\n", map {
    "            llm_route  r$_  p:a weight=2  p:b;" } 0 .. 399;

$c = <<'EOF' . proxy_location('p') . "    }\n}\n";
http {
    llm_zone  tiny  32k;

    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  w  p:a weight=3  p:b;
#TINY#
        }
EOF
$c =~ s/#TINY#/$tiny/;
$t->write_conf($c);
$t->run;

sub model { return chat(@_)->{headers}{'x-llm-model'} // '?' }

my ($ok, @w) = (0);
for my $i (0 .. 399) {
    $ok++ if chat("r$i")->{status} == 200;

    # w is used all along: its position is never the least recent
    push @w, model('w') if $i % 50 == 0;
}
is($ok, 400, 'tiny zone: every request answered');
is("@w", 'a a b a a a b a', 'tiny zone: the route in use kept its position');

is(model('r399') . ' ' . model('r0'), 'b a',
    'tiny zone: the last route kept its position (b), the first was '
    . 'evicted (a again)');

$t->done;
