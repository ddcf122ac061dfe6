#!/usr/bin/perl

# Fallback to the next target: which failures move on, x-llm-attempts,
# llm_fallback off and llm_fallback with a subset of conditions.
#
# Two primary targets share the load (smooth weighted round-robin, as in
# an upstream block), so a route whose order matters ends with a backup
# target; "rr" checks the plain two-target form on its first request.
#
# Targets remember failures (max_fails=1 fail_timeout=10s by default,
# keyed by provider:model across all routes) and cool down after a 429/503
# with Retry-After; so that each check below sees a fresh target, the
# fallback checks use max_fails=0 and a model name of their own per server
# (the mock ignores what follows "fault-NNN").  The last part checks the
# passive health and cooling themselves (docs/directives.md, llm_route).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use LLMGW;

my $t = LLMGW->new;
my $mock = $t->run_mock;

sub routes {
    my ($s) = @_;
    my $f = "max_fails=0";
    return <<"EOF";
            llm_route  x   fault:fault-500-$s $f  ok:good backup;
            llm_route  y   fault:fault-429-$s $f  ok:good backup;
            llm_route  z   fault:fault-reset-$s $f  ok:good backup;
            llm_route  w   fault:fault-401-$s $f  ok:good backup;
            llm_route  v   fault:fault-503-$s $f  ok:good backup;
            llm_route  all fault:fault-500-$s-a $f
                           fault:fault-500-$s-b $f backup;
            llm_route  rr  fault:fault-500-$s-rr $f  ok:good;
EOF
}

my $loc = proxy_location('fault') . proxy_location('ok');

$t->write_conf(<<"EOF");
http {
    llm_provider fault format=openai pass=/_llm/fault/;
    llm_provider ok    format=openai pass=/_llm/ok/;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location /v1/ {
            llm_gateway;
@{[ routes('s0') ]}
            llm_route  h   fault:fault-500-health  ok:good backup;
            llm_route  c   fault:fault-429-cool max_fails=0  ok:good backup;
        }
$loc
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location /v1/ {
            llm_gateway;
            llm_fallback off;
@{[ routes('s1') ]}
        }
$loc
    }

    server {
        listen 127.0.0.1:%%PORT_2%%;
        location /v1/ {
            llm_gateway;
            llm_fallback http_429;
@{[ routes('s2') ]}
        }
$loc
    }
}
EOF
$t->run;

my $T = JSON::PP::true;
my $msgs = [{ role => 'user', content => 'fall back' }];

sub chat {
    my ($port, $model, %o) = @_;
    mock_reset($t);
    my $f = $o{stream} ? \&http_stream : \&http;
    return $f->($t, $t->port($port), 'POST', '/v1/chat/completions', {},
        { model => $model, messages => $msgs,
          $o{stream} ? (stream => $T) : () });
}

# the models the provider was asked for since the last chat()
sub tried {
    return join ' ', map { my $m = $_->{json}{model} // '?';
        $m =~ s/^(fault-\w+)-.*/$1/; $m } @{ mock_requests($t) };
}

###############################################################################
# default conditions: error timeout http_429 http_5xx

my $r = chat(0, 'rr');
is($r->{status}, 200, 'x fault:fault-500 ok:good: status');
is($r->{headers}{'x-llm-attempts'}, '2', 'x fault:fault-500 ok:good: 2 attempts');
is(tried(), 'fault-500 good', 'x fault:fault-500 ok:good: both asked');

$r = chat(0, 'x');
is($r->{status}, 200, '500 then ok: status');
is($r->{json}{choices}[0]{message}{content}, 'echo: fall back',
    '500 then ok: answer from the second target');
is($r->{headers}{'x-llm-attempts'}, '2', '500 then ok: x-llm-attempts 2');
is($r->{headers}{'x-llm-provider'}, 'ok', '500 then ok: x-llm-provider');
is($r->{headers}{'x-llm-model'}, 'good', '500 then ok: x-llm-model');
is(tried(), 'fault-500 good', '500 then ok: provider saw both');

$r = chat(0, 'x', stream => 1);
is($r->{status}, 200, 'stream 500 then ok: status');
is($r->{text}, 'echo: fall back', 'stream 500 then ok: text');
ok($r->{done} && $r->{clean}, 'stream 500 then ok: complete');
is($r->{headers}{'x-llm-attempts'}, '2', 'stream: x-llm-attempts 2');
is(tried(), 'fault-500 good', 'stream: provider saw both');
ok(!(grep { ref $_->{error} } @{ $r->{chunks} }),
    'stream: nothing of the failed attempt leaks');

$r = chat(0, 'y');
is($r->{status}, 200, '429 then ok');
is($r->{headers}{'x-llm-attempts'}, '2', '429: attempts 2');

$r = chat(0, 'z');
is($r->{status}, 200, 'reset then ok');
is($r->{headers}{'x-llm-attempts'}, '2', 'reset: attempts 2');

$r = chat(0, 'v');
is($r->{status}, 200, '503 then ok');
is($r->{headers}{'x-llm-attempts'}, '2', '503: attempts 2');

$r = chat(0, 'w');
is($r->{status}, 401, '401 is not a fallback condition');
is($r->{headers}{'x-llm-attempts'}, '1', '401: attempts 1');
is(tried(), 'fault-401', '401: second target not tried');

$r = chat(0, 'all');
# docs/directives.md (llm_fallback) and DESIGN.md: 502 (504 after a
# timeout) when several attempts failed, with the last attempt's error body
is($r->{status}, 502, 'every target failed: 502')
    or diag($r->{body});
like($r->{json}{error}{message} // '', qr/server had an error/,
    'every target failed: the last error message');
ok(ref $r->{json}{error} eq 'HASH' && $r->{json}{error}{message},
    'every target failed: OpenAI error') or diag($r->{body});
is($r->{headers}{'x-llm-attempts'}, '2', 'every target failed: attempts 2');
is(tried(), 'fault-500 fault-500', 'every target failed: both tried');

###############################################################################
# llm_fallback off

$r = chat(1, 'x');
is($r->{status}, 500, 'off: the 500 comes back');
ok(ref $r->{json}{error} eq 'HASH' && $r->{json}{error}{message},
    'off: OpenAI-shaped') or diag($r->{body});
is($r->{headers}{'x-llm-attempts'}, '1', 'off: attempts 1');
is(tried(), 'fault-500', 'off: one request');

$r = chat(1, 'x', stream => 1);
is($r->{status}, 500, 'off, stream: 500');
is(ref $r->{json}{error}, 'HASH', 'off, stream: JSON error');

###############################################################################
# llm_fallback http_429 only

$r = chat(2, 'y');
is($r->{status}, 200, 'http_429: 429 falls back');
is(tried(), 'fault-429 good', 'http_429: both tried for 429');
$r = chat(2, 'x');
is($r->{status}, 500, 'http_429: 500 does not');
is(tried(), 'fault-500', 'http_429: one request for 500');

###############################################################################
# passive health: a failed target is skipped for fail_timeout (10s)

$r = chat(0, 'h');
is($r->{headers}{'x-llm-attempts'}, '2', 'health: first request, 2 attempts');
$r = chat(0, 'h');
is($r->{status}, 200, 'health: second request');
is($r->{headers}{'x-llm-attempts'}, '1', 'health: failed target skipped');
is(tried(), 'good', 'health: only the good target asked');

# cooling: a 429 with Retry-After: 1 is skipped for a second
$r = chat(0, 'c');
is($r->{headers}{'x-llm-attempts'}, '2', 'cooling: first request');
$r = chat(0, 'c');
is(tried(), 'good', 'cooling: the 429 target skipped');
sleep 1.3;
$r = chat(0, 'c');
is(tried(), 'fault-429 good', 'cooling: tried again after Retry-After');

$t->done;
