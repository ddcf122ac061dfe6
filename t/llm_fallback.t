#!/usr/bin/perl

# Fallback across targets (llm_fallback, llm_fallback_tries,
# llm_fallback_timeout), see docs/fallback.md: which failures move on to
# the next target and what the client and the logs see.  (Passive health
# and cool-downs: t/llm_health.t; spreading over targets:
# t/llm_route_balance.t.)
#
#  - a failing primary moves on to its backup for each fault of the mock
#    (500, 503 and 429 with Retry-After, Anthropic 529, a hang past
#    proxy_read_timeout, a connection reset, an answer broken off, and
#    garbage / HTML / truncated bodies under invalid_response), for JSON
#    and streamed requests: the client gets the backup's answer, the
#    headers name the backup, and the mock saw exactly one request per
#    target;
#  - the body is rebuilt for each target's format (Anthropic, Gemini,
#    OpenAI in one request);
#  - llm_fallback off, llm_fallback_tries, the 502/504 when every attempt
#    failed, llm_fallback_timeout;
#  - retries inside one provider are nginx's (an upstream group with
#    proxy_next_upstream): the gateway sees one attempt;
#  - a stream broken after its first byte is ended, not retried;
#  - the OpenAI SDK gets normal answers while the primary fails;
#  - and on targets with max_fails=0 (no passive health): the same faults,
#    two primaries with no backup, a 401 (not a condition), every target
#    failed, and llm_fallback with a subset of the conditions.
#
# Every route has targets of its own (the mock ignores what follows
# "fault-NNN"), so the health and cool-down state of one check (kept per
# provider:model) never leaks into another.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $KEY = 'sk-fallback-secret-key';
$t->write_file('key', "$KEY\n");

# the matrix of faults: [name, provider, model prefix, JSON, stream]
my @faults = (
    ['500',       'f',    'fault-500',    1, 1],
    ['503',       'f',    'fault-503',    1, 1],
    ['429',       'f',    'fault-429',    1, 1],
    ['529',       'anth', 'fault-529',    1, 1],
    ['hang',      'f',    'fault-hang',   1, 1],
    ['reset',     'f',    'fault-reset',  1, 1],
    # a JSON answer broken off after its header (a stream broken off is
    # past its first byte: see below)
    ['drop',      'f',    'fault-drop',   1, 0],
);

# (garbage in a stream has no event at all; a truncated stream has sent
# its first events before it ends, which is past the point of fallback)

# with llm_fallback ... invalid_response (server 2)
my @invalid = (
    ['garbage',   'f',    'fault-garbage',   1, 1],
    ['html',      'f',    'fault-html',      1, 0],
    ['truncated', 'f',    'fault-truncated', 1, 0],
);

sub tag { my ($s) = @_; return $s ? 's' : 'j' }

# the routes of the max_fails=0 checks, for the server with port name $s
sub routes_mf0 {
    my ($s) = @_;
    my $f = "max_fails=0";
    return <<"EOF";
            llm_route  x   f:fault-500-$s $f  ok:good backup;
            llm_route  y   f:fault-429-$s $f  ok:good backup;
            llm_route  z   f:fault-reset-$s $f  ok:good backup;
            llm_route  w   f:fault-401-$s $f  ok:good backup;
            llm_route  v   f:fault-503-$s $f  ok:good backup;
            llm_route  all f:fault-500-$s-a $f
                           f:fault-500-$s-b $f backup;
            llm_route  rr  f:fault-500-$s-rr $f  ok:good;
EOF
}

my $routes0 = '';
for my $f (@faults) {
    my ($n, $p, $m) = @$f;
    for my $s (0, 1) {
        $routes0 .= "            llm_route m-$n-" . tag($s)
            . "  $p:$m-" . tag($s) . "  ok:good backup;\n";
    }
}

my $routes2 = '';
for my $f (@invalid) {
    my ($n, $p, $m) = @$f;
    for my $s (0, 1) {
        $routes2 .= "            llm_route i-$n-" . tag($s)
            . "  $p:$m-i" . tag($s) . "  ok:good backup;\n";
    }
}

my $timeout1 = 'proxy_read_timeout 1s;';
my $locs = proxy_location('f', extra => $timeout1)
    . proxy_location('anth', extra => $timeout1)
    . proxy_location('gem', extra => $timeout1)
    . proxy_location('ok', extra => $timeout1)
    . proxy_location('fs');

# provider-internal retries: upstream groups whose first server fails
my $nu = <<'EOF';
        location /_llm/nuc/ {
            internal;
            proxy_pass http://nu_closed/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 non_idempotent;
        }
        location /_llm/nu5/ {
            internal;
            proxy_pass http://nu_502/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 non_idempotent;
        }
        location /_llm/nu5p/ {
            internal;
            proxy_pass http://nu_502p/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_502;
        }
EOF

$t->write_conf(<<"EOF");
http {
    log_format llm '\$llm_attempts|\$status|\$llm_provider|\$llm_model';

    llm_provider f    format=openai    pass=/_llm/f/
                      key_file=%%TESTDIR%%/key;
    llm_provider ok   format=openai    pass=/_llm/ok/;
    llm_provider anth format=anthropic pass=/_llm/anth/
                      key_file=%%TESTDIR%%/key;
    llm_provider gem  format=gemini    pass=/_llm/gem/;
    llm_provider fs   format=openai    pass=/_llm/fs/;
    llm_provider nuc  format=openai    pass=/_llm/nuc/;
    llm_provider nu5  format=openai    pass=/_llm/nu5/;
    llm_provider nu5p format=openai    pass=/_llm/nu5p/;

    upstream nu_closed {
        server 127.0.0.1:%%PORT_closed%% max_fails=0;
        server 127.0.0.1:%%MOCK%%;
    }
    upstream nu_502 {
        server 127.0.0.1:%%PORT_5%% max_fails=0;
        server 127.0.0.1:%%MOCK%%;
    }
    upstream nu_502p {
        server 127.0.0.1:%%PORT_5%% max_fails=0;
        server 127.0.0.1:%%MOCK%%;
    }

    # default llm_fallback: error timeout http_429 http_5xx
    server {
        listen 127.0.0.1:%%PORT_0%%;
        access_log %%TESTDIR%%/llm0.log llm;
        location /v1/ {
            llm_gateway;
$routes0
            llm_route g-garbage-j  f:fault-garbage-dj  ok:good backup;
            llm_route g-garbage-s  f:fault-garbage-ds  ok:good backup;

            llm_route cf   anth:fault-500-cf  gem:fault-503-cf backup
                           ok:gpt-4o backup;
            llm_route cf2  anth:fault-529-cf2  gem:gemini-2.0-flash backup;
            llm_route cf3  anth:fault-500-cf3  gem:gemini-2.0-flash backup;

            llm_route ft0  fs:fault-slowfail-ft0  ok:good backup;

            llm_route nu   nuc:gpt-4o  ok:good backup;
            llm_route n5   nu5:gpt-4o  ok:good backup;
            llm_route n5p  nu5p:gpt-4o ok:good backup;

            llm_route sd   f:fault-drop-sd  ok:good backup;

            llm_route sdk-fb  f:fault-500-sdk max_fails=0  ok:gpt-4o backup;
            llm_route emb-fb  f:fault-500-semb max_fails=0
                              ok:text-embedding-3-small backup;
@{[ routes_mf0('s0') ]}
        }
$locs
$nu
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        access_log %%TESTDIR%%/llm1.log llm;
        location /v1/ {
            llm_gateway;
            llm_fallback off;
            llm_route off-500  f:fault-500-off  ok:good backup;
            llm_route off-429  f:fault-429-off  ok:good backup;
            llm_route off-503s f:fault-503-offs ok:good backup;
@{[ routes_mf0('s1') ]}
        }
$locs
    }

    server {
        listen 127.0.0.1:%%PORT_2%%;
        access_log %%TESTDIR%%/llm2.log llm;
        location /v1/ {
            llm_gateway;
            llm_fallback error timeout http_429 http_5xx invalid_response;
$routes2
        }
$locs
    }

    server {
        listen 127.0.0.1:%%PORT_3%%;
        access_log %%TESTDIR%%/llm3.log llm;
        location /v1/ {
            llm_gateway;
            llm_fallback_tries 2;
            llm_route t3  f:fault-500-t1  f:fault-500-t2 backup
                          f:fault-500-t3 backup;
            llm_route t4  f:fault-500-t4  f:fault-hang-t4 backup
                          ok:good backup;
        }
$locs
    }

    server {
        listen 127.0.0.1:%%PORT_4%%;
        access_log %%TESTDIR%%/llm4.log llm;
        location /v1/ {
            llm_gateway;
            llm_fallback_timeout 1s;
            llm_route ft   fs:fault-slowfail-ft  ok:good backup;
            llm_route ft2  f:fault-500-ft2  fs:fault-slowfail-ft2 backup
                           ok:good backup;
        }
$locs
    }

    # llm_fallback with one condition
    server {
        listen 127.0.0.1:%%PORT_6%%;
        access_log %%TESTDIR%%/llm6.log llm;
        location /v1/ {
            llm_gateway;
            llm_fallback http_429;
@{[ routes_mf0('s6') ]}
        }
$locs
    }

    # the failing first server of nu_502: answers every request with 502
    server {
        listen 127.0.0.1:%%PORT_5%%;
        access_log %%TESTDIR%%/bad502.log;
        location / {
            return 502;
        }
    }
}
EOF
$t->run;

my $T = JSON::PP::true;
my $msgs = [{ role => 'system', content => 'be brief' },
            { role => 'user', content => 'fall back' }];

chat_defaults($t, messages => $msgs, reset => 1);

# what the mock was asked since the last chat(): "format:model ..."
sub seen { return join ' ', asked($t, format => 1) }

# the line of access log n that matches $re (it names the request's first
# target), waited for: [attempts, status, provider, model]
sub logged {
    my ($n, $re) = @_;
    return [split /\|/, log_line($t, "llm$n.log", $re) // '', -1];
}

my %fmt = (f => 'openai', anth => 'anthropic', gem => 'gemini');

###############################################################################
# the fault matrix: the backup answers

sub fallback_ok {
    my ($port, $route, $prov, $model, $stream, $what) = @_;
    my $name = "$what" . ($stream ? ' (stream)' : '');

    my $r = chat($t, $route, port => $port, stream => $stream);
    is($r->{status}, 200, "$name: 200") or diag($r->{body});
    if ($stream) {
        is($r->{text}, 'echo: fall back', "$name: backup's stream");
        ok($r->{done} && $r->{clean}, "$name: [DONE], clean end");
        ok(!(grep { ref $_ eq 'HASH' && $_->{error} } @{ $r->{chunks} }),
            "$name: no error event");
        like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
            "$name: event stream");
    } else {
        is($r->{json}{choices}[0]{message}{content}, 'echo: fall back',
            "$name: backup's answer");
    }
    is($r->{headers}{'x-llm-attempts'}, '2', "$name: x-llm-attempts 2");
    is($r->{headers}{'x-llm-provider'}, 'ok', "$name: x-llm-provider");
    is($r->{headers}{'x-llm-model'}, 'good', "$name: x-llm-model");
    is(seen(), "$fmt{$prov}:$model openai:good",
        "$name: one request per target");
    return $r;
}

for my $f (@faults) {
    my ($n, $p, $m, $json, $stream) = @$f;
    for my $s (0, 1) {
        next if $s ? !$stream : !$json;
        fallback_ok(0, "m-$n-" . tag($s), $p, "$m-" . tag($s), $s, $n);
    }
}

for my $f (@invalid) {
    my ($n, $p, $m, $json, $stream) = @$f;
    for my $s (0, 1) {
        next if $s ? !$stream : !$json;
        fallback_ok(2, "i-$n-" . tag($s), $p, "$m-i" . tag($s), $s,
            "$n, invalid_response");
    }
}

# what $llm_attempts said for them (provider:model result time), from
# the access log of the first round
my %attempts;
for my $f (@faults) {
    my ($n, $p, $m) = @$f;
    $attempts{$n} = logged(0, qr/^\Q$p:$m-j\E /)->[0] // '';
}

like($attempts{500}, qr/^f:fault-500-j 500 \d+ms, ok:good 200 \d+ms$/,
    '$llm_attempts: 500');
like($attempts{429}, qr/^f:fault-429-j 429 \d+ms, ok:good 200 \d+ms$/,
    '$llm_attempts: 429');
like($attempts{529},
    qr/^anth:fault-529-j 529 \d+ms, ok:good 200 \d+ms$/,
    '$llm_attempts: 529');
like($attempts{hang},
    qr/^f:fault-hang-j timeout 1\d{3}ms, ok:good 200 \d+ms$/,
    '$llm_attempts: timeout after proxy_read_timeout 1s');
like($attempts{reset}, qr/^f:fault-reset-j error \d+ms, ok:good 200 \d+ms$/,
    '$llm_attempts: reset is an error');
like($attempts{drop}, qr/^f:fault-drop-j broken \d+ms, ok:good 200 \d+ms$/,
    '$llm_attempts: an answer broken off');

{
    my $line = log_line($t, 'llm2.log', qr/^f:fault-garbage-ij /);
    like($line // '', qr/^f:fault-garbage-ij invalid \d+ms, ok:good 200 \d+ms\|200\|ok\|good$/,
        '$llm_attempts: invalid, then the backup');
}

# each failed attempt is logged once at warn, without the key
{
    my $log = $t->error_log;
    my @l = grep { /\[warn\].*llm: provider "f" model "fault-500-j" failed/ }
        split /\n/, $log;
    is(scalar @l, 1, 'failed attempt logged once at warn');
    like($l[0] // '', qr/failed: HTTP 500 after \d+ms/,
        'the warn line has status and time');
    unlike($log, qr/\Q$KEY\E/, 'the key is never logged');
}

###############################################################################
# garbage is not retried under the default conditions

for my $s (0, 1) {
    my $name = 'garbage, default conditions' . ($s ? ' (stream)' : '');
    my $r = chat($t, 'g-garbage-' . tag($s), stream => $s);
    is($r->{status}, 502, "$name: 502");
    is($r->{json}{error}{code}, 'invalid_response', "$name: invalid_response")
        or diag($r->{body});
    is($r->{headers}{'x-llm-attempts'}, '1', "$name: one attempt");
    is(seen(), 'openai:fault-garbage-d' . tag($s),
        "$name: backup not asked");
}

###############################################################################
# cross-format fallback: the body is rebuilt for each target

{
    my $r = chat($t, 'cf');
    is($r->{status}, 200, 'anthropic -> gemini -> openai: 200')
        or diag($r->{body});
    is($r->{json}{choices}[0]{message}{content}, 'echo: fall back',
        'anthropic -> gemini -> openai: answer');
    is($r->{headers}{'x-llm-attempts'}, '3', 'cross-format: 3 attempts');
    is($r->{headers}{'x-llm-provider'}, 'ok', 'cross-format: provider');
    is($r->{headers}{'x-llm-model'}, 'gpt-4o', 'cross-format: model');
    is(seen(), 'anthropic:fault-500-cf gemini:fault-503-cf openai:gpt-4o',
        'cross-format: each target asked once, in order');

    my @q = @{ mock_requests($t) };
    my ($a, $g, $o) = map { $_->{json} } @q;

    is($a->{model}, 'fault-500-cf', 'anthropic body: model');
    is($a->{system}, 'be brief', 'anthropic body: system on top');
    ok($a->{max_tokens} && $a->{max_tokens} > 0,
        'anthropic body: max_tokens');
    is_deeply([map { $_->{role} } @{ $a->{messages} }], ['user'],
        'anthropic body: system left out of messages');
    is($q[0]{headers}{'x-api-key'}, $KEY, 'anthropic: its key');
    is($q[0]{headers}{'anthropic-version'}, '2023-06-01',
        'anthropic: anthropic-version');

    ok(!exists $g->{model} && !exists $g->{messages},
        'gemini body: no model, no messages');
    is($g->{contents}[0]{parts}[0]{text}, 'fall back',
        'gemini body: contents');
    is($g->{systemInstruction}{parts}[0]{text}
        // $g->{system_instruction}{parts}[0]{text}, 'be brief',
        'gemini body: system instruction');
    ok(!exists $q[1]{headers}{'x-api-key'}
        && !exists $q[1]{headers}{authorization},
        'gemini: no key of another provider');

    is($o->{model}, 'gpt-4o', 'openai body: model');
    is_deeply($o->{messages}, $msgs, 'openai body: messages');
    ok(!exists $o->{max_tokens}, 'openai body: no max_tokens added');
    ok(!exists $q[2]{headers}{authorization}
        && !exists $q[2]{headers}{'x-api-key'},
        'openai backup without key_file: no auth header');

    $r = chat($t, 'cf2');
    is($r->{status}, 200, 'anthropic 529 -> gemini: 200');
    is($r->{headers}{'x-llm-provider'}, 'gem', 'anthropic 529 -> gemini');
    is($r->{headers}{'x-llm-model'}, 'gemini-2.0-flash',
        'anthropic 529 -> gemini: model');
    is($r->{json}{choices}[0]{message}{content}, 'echo: fall back',
        'anthropic 529 -> gemini: translated answer');
    is(seen(), 'anthropic:fault-529-cf2 gemini:gemini-2.0-flash',
        'anthropic 529 -> gemini: one request each');

    $r = chat($t, 'cf3', stream => 1);
    is($r->{text}, 'echo: fall back', 'anthropic -> gemini stream');
    ok($r->{done} && $r->{clean}, 'anthropic -> gemini stream: complete');
    my @q3 = @{ mock_requests($t) };
    is(scalar @q3, 2, 'anthropic -> gemini stream: two requests');
    is($q3[0]{json}{stream}, $T, 'anthropic stream body: stream true');
    like($q3[1]{url} // '', qr/:streamGenerateContent\?alt=sse$/,
        'gemini stream: streamGenerateContent?alt=sse');
}

###############################################################################
# llm_fallback off: the first failure comes back as it is

{
    my $r = chat($t, 'off-500', port => 1);
    is($r->{status}, 500, 'off: provider status 500');
    is(ref $r->{json}{error}, 'HASH', 'off: OpenAI-shaped error')
        or diag($r->{body});
    like($r->{json}{error}{message} // '', qr/server had an error/,
        "off: the provider's message");
    ok(exists $r->{json}{error}{type} && exists $r->{json}{error}{code}
        && exists $r->{json}{error}{param}, 'off: type, code, param');
    is($r->{headers}{'x-llm-attempts'}, '1', 'off: one attempt');
    is($r->{headers}{'x-llm-provider'}, 'f', 'off: x-llm-provider');
    is(seen(), 'openai:fault-500-off', 'off: backup not asked');

    $r = chat($t, 'off-429', port => 1);
    is($r->{status}, 429, 'off: 429 as it is');
    is($r->{json}{error}{code}, 'rate_limit_exceeded', 'off: 429 code');
    is($r->{headers}{'retry-after'}, '1', "off: the provider's Retry-After");
    is($r->{headers}{'x-ratelimit-remaining-requests'}, '0',
        "off: the provider's x-ratelimit-* headers");
    is(seen(), 'openai:fault-429-off', 'off: one request for 429');

    $r = chat($t, 'off-503s', port => 1, stream => 1);
    is($r->{status}, 503, 'off, stream: 503');
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        'off, stream: a JSON error, not a stream');
    is(ref $r->{json}{error}, 'HASH', 'off, stream: OpenAI error');
    is(seen(), 'openai:fault-503-offs', 'off, stream: one request');

    # a target with max_fails=0
    $r = chat($t, 'x', port => 1);
    is($r->{status}, 500, 'off: the 500 comes back');
    ok(ref $r->{json}{error} eq 'HASH' && $r->{json}{error}{message},
        'off: OpenAI-shaped') or diag($r->{body});
    is($r->{headers}{'x-llm-attempts'}, '1', 'off: attempts 1');
    is(seen(), 'openai:fault-500-s1', 'off: one request');

    $r = chat($t, 'x', port => 1, stream => 1);
    is($r->{status}, 500, 'off, stream: 500');
    is(ref $r->{json}{error}, 'HASH', 'off, stream: JSON error');
}

###############################################################################
# llm_fallback_tries 2 over three failing targets; the last one a timeout

{
    my $r = chat($t, 't3', port => 3);
    is($r->{status}, 502, 'tries 2: every attempt failed: 502');
    is($r->{headers}{'x-llm-attempts'}, '2', 'tries 2: two attempts');
    is(seen(), 'openai:fault-500-t1 openai:fault-500-t2',
        'tries 2: third target not asked');
    like($r->{json}{error}{message} // '', qr/server had an error/,
        "tries 2: the last provider's message");
    is(logged(3, qr/^f:fault-500-t1 /)->[1], '502', 'tries 2: logged 502');

    $r = chat($t, 't4', port => 3);
    is($r->{status}, 504, 'last attempt timed out: 504');
    is($r->{json}{error}{code}, 'provider_timeout',
        'last attempt timed out: provider_timeout') or diag($r->{body});
    is($r->{headers}{'x-llm-attempts'}, '2', 'timeout: two attempts');
    is(seen(), 'openai:fault-500-t4 openai:fault-hang-t4',
        'timeout: third target (a good one) not asked: tries');
    like(logged(3, qr/^f:fault-500-t4 /)->[0],
        qr/^f:fault-500-t4 500 \d+ms, f:fault-hang-t4 timeout 1\d{3}ms$/,
        'timeout: $llm_attempts');
}

###############################################################################
# llm_fallback_timeout 1s: no new attempt after it, the one under way is
# not cut short

{
    my $r = chat($t, 'ft0');
    is($r->{status}, 200, 'no fallback timeout: slow 503 falls back');
    is($r->{headers}{'x-llm-attempts'}, '2', 'no fallback timeout: 2');

    $r = chat($t, 'ft', port => 4);
    is($r->{status}, 503, "fallback timeout: the slow 503 is final");
    is($r->{headers}{'x-llm-attempts'}, '1', 'fallback timeout: one attempt');
    is(seen(), 'openai:fault-slowfail-ft', 'fallback timeout: backup not asked');
    cmp_ok($r->{t_total}, '>=', 1.15,
        'fallback timeout: the attempt under way ran to its end');
    cmp_ok($r->{t_total}, '<', 2.5, 'fallback timeout: and no more');

    $r = chat($t, 'ft2', port => 4);
    is($r->{status}, 502, 'fallback timeout after the 2nd attempt: 502');
    is($r->{headers}{'x-llm-attempts'}, '2',
        'fallback timeout: second attempt started before the timeout');
    is(seen(), 'openai:fault-500-ft2 openai:fault-slowfail-ft2',
        'fallback timeout: third target not asked after it');
}

###############################################################################
# retries inside one provider: nginx's upstream + proxy_next_upstream

{
    my ($ok, $one) = (0, 0);
    for (1 .. 4) {
        my $r = chat($t, 'nu');
        $ok++ if $r->{status} == 200
            && ($r->{json}{choices}[0]{message}{content} // '')
               eq 'echo: fall back';
        $one++ if ($r->{headers}{'x-llm-attempts'} // '') eq '1'
            && ($r->{headers}{'x-llm-provider'} // '') eq 'nuc';
    }
    is($ok, 4, 'closed port in the upstream: every answer 200');
    is($one, 4, 'closed port in the upstream: one gateway attempt each');
    like($t->error_log, qr/connect\(\) failed \(111.*upstream: "http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions"/,
        'closed port in the upstream: nginx met it');

    ($ok, $one) = (0, 0);
    for (1 .. 4) {
        my $r = chat($t, 'n5');
        $ok++ if $r->{status} == 200;
        $one++ if ($r->{headers}{'x-llm-attempts'} // '') eq '1'
            && ($r->{headers}{'x-llm-provider'} // '') eq 'nu5';
    }
    is($ok, 4, '502 server, non_idempotent: every answer 200');
    is($one, 4, '502 server, non_idempotent: one gateway attempt each');
    my $bad = () = ($t->read_file('bad502.log') // '') =~ /"POST [^"]*" 502/g;
    cmp_ok($bad, '>=', 1, '502 server, non_idempotent: nginx retried a POST'
        . ' that server answered 502');

    # without non_idempotent nginx does not resend the POST: the gateway
    # falls back to the next target itself
    my $before = $bad;
    my $r = chat($t, 'n5p');
    is($r->{status}, 200, 'no non_idempotent: 200 from the backup');
    is($r->{headers}{'x-llm-attempts'}, '2',
        'no non_idempotent: llm_fallback made the second attempt');
    is($r->{headers}{'x-llm-provider'}, 'ok', 'no non_idempotent: backup');
    $bad = () = ($t->read_file('bad502.log') // '') =~ /"POST [^"]*" 502/g;
    is($bad, $before + 1, 'no non_idempotent: the 502 server was asked');
}

###############################################################################
# a stream broken after its first byte: ended, no fallback

{
    my $r = chat($t, 'sd', stream => 1);
    is($r->{status}, 200, 'stream broken: 200 (already sent)');
    ok($r->{clean}, 'stream broken: chunked body ended cleanly');
    is($r->{data}[-1], '[DONE]', 'stream broken: data: [DONE] last');
    my @err = grep { ref $_ eq 'HASH' && ref $_->{error} eq 'HASH' }
        @{ $r->{chunks} };
    is(scalar @err, 1, 'stream broken: one error event');
    ok(@err && $err[0]{error}{message}, 'stream broken: error message');
    like($r->{text}, qr/^echo:/, 'stream broken: the first events arrived');
    is($r->{headers}{'x-llm-attempts'}, '1', 'stream broken: one attempt');
    is(seen(), 'openai:fault-drop-sd', 'stream broken: backup not asked');
    like(logged(0, qr/^f:fault-drop-sd /)->[0],
        qr/^f:fault-drop-sd broken \d+ms$/,
        'stream broken: attempt recorded as broken');
}

###############################################################################
# targets with max_fails=0: passive health never skips them, so each
# request meets the fault; default conditions (error timeout http_429
# http_5xx)

{
    # two primaries, no backup: the other primary is the fallback (the
    # first pick of the round-robin is the first target)
    my $r = chat($t, 'rr');
    is($r->{status}, 200, 'x fault:fault-500 ok:good: status');
    is($r->{headers}{'x-llm-attempts'}, '2',
        'x fault:fault-500 ok:good: 2 attempts');
    is(seen(), 'openai:fault-500-s0-rr openai:good',
        'x fault:fault-500 ok:good: both asked');

    $r = chat($t, 'x');
    is($r->{status}, 200, '500 then ok: status');
    is($r->{json}{choices}[0]{message}{content}, 'echo: fall back',
        '500 then ok: answer from the second target');
    is($r->{headers}{'x-llm-attempts'}, '2', '500 then ok: x-llm-attempts 2');
    is($r->{headers}{'x-llm-provider'}, 'ok', '500 then ok: x-llm-provider');
    is($r->{headers}{'x-llm-model'}, 'good', '500 then ok: x-llm-model');
    is(seen(), 'openai:fault-500-s0 openai:good',
        '500 then ok: provider saw both');

    $r = chat($t, 'x', stream => 1);
    is($r->{status}, 200, 'stream 500 then ok: status');
    is($r->{text}, 'echo: fall back', 'stream 500 then ok: text');
    ok($r->{done} && $r->{clean}, 'stream 500 then ok: complete');
    is($r->{headers}{'x-llm-attempts'}, '2', 'stream: x-llm-attempts 2');
    is(seen(), 'openai:fault-500-s0 openai:good', 'stream: provider saw both');
    ok(!(grep { ref $_->{error} } @{ $r->{chunks} }),
        'stream: nothing of the failed attempt leaks');

    $r = chat($t, 'y');
    is($r->{status}, 200, '429 then ok');
    is($r->{headers}{'x-llm-attempts'}, '2', '429: attempts 2');

    $r = chat($t, 'z');
    is($r->{status}, 200, 'reset then ok');
    is($r->{headers}{'x-llm-attempts'}, '2', 'reset: attempts 2');

    $r = chat($t, 'v');
    is($r->{status}, 200, '503 then ok');
    is($r->{headers}{'x-llm-attempts'}, '2', '503: attempts 2');

    $r = chat($t, 'w');
    is($r->{status}, 401, '401 is not a fallback condition');
    is($r->{headers}{'x-llm-attempts'}, '1', '401: attempts 1');
    is(seen(), 'openai:fault-401-s0', '401: second target not tried');

    # docs/directives.md (llm_fallback) and DESIGN.md: 502 (504 after a
    # timeout) when several attempts failed, with the last attempt's error
    # body
    $r = chat($t, 'all');
    is($r->{status}, 502, 'every target failed: 502')
        or diag($r->{body});
    like($r->{json}{error}{message} // '', qr/server had an error/,
        'every target failed: the last error message');
    ok(ref $r->{json}{error} eq 'HASH' && $r->{json}{error}{message},
        'every target failed: OpenAI error') or diag($r->{body});
    is($r->{headers}{'x-llm-attempts'}, '2',
        'every target failed: attempts 2');
    is(seen(), 'openai:fault-500-s0-a openai:fault-500-s0-b',
        'every target failed: both tried');
}

###############################################################################
# llm_fallback http_429 only

{
    my $r = chat($t, 'y', port => 6);
    is($r->{status}, 200, 'http_429: 429 falls back');
    is(seen(), 'openai:fault-429-s6 openai:good',
        'http_429: both tried for 429');
    $r = chat($t, 'x', port => 6);
    is($r->{status}, 500, 'http_429: 500 does not');
    is(seen(), 'openai:fault-500-s6', 'http_429: one request for 500');
}

###############################################################################
# the OpenAI SDK while the primary fails on every request

SKIP: {
    my $sdk = "$FindBin::Bin/sdk";
    skip 'no node or no t/sdk/node_modules/openai', 3
        if system('node -e 0 >/dev/null 2>&1') != 0
            || !-d "$sdk/node_modules/openai";

    mock_reset($t);
    my $base = 'http://127.0.0.1:' . $t->port(0) . '/v1';
    my ($rc, $plan, $seen) = sdk_run($sdk, 'sdk, failing primary', $base,
        'sdk-fb', 'emb-fb');
    ok($rc == 0 && defined $plan && $plan == $seen && $seen >= 8,
        'sdk: run.mjs ran every check') or diag("exit $rc");

    my @s = asked($t, format => 1);
    my $primary = grep { /^openai:fault-500-s(dk|emb)$/ } @s;
    my $backup = grep { /^openai:(gpt-4o|text-embedding-3-small)$/ } @s;
    cmp_ok($primary, '>=', 6, 'sdk: the primary was asked every time');
    is($backup, $primary, 'sdk: one backup request per failed primary');
}

$t->done;
