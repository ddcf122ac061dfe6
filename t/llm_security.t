#!/usr/bin/perl

# Hostile input from both sides: client model names that try to write a
# header, a log line or a provider path; duplicate members; bodies that
# the gateway location accepts but a pass location would refuse; provider
# text that quotes the key or carries invalid UTF-8; oversized stream
# events.  Checked on the raw bytes of the response.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

my $KEY = 'sk-secret-KEY-0123456789abcdef';
$t->write_file('key', "$KEY\n");

$t->write_conf(<<'EOF'
http {
    llm_provider openai    format=openai    pass=/_llm/openai/
                 key_file=%%TESTDIR%%/key;
    llm_provider anthropic format=anthropic pass=/_llm/openai/
                 key_file=%%TESTDIR%%/key;
    llm_provider gemini    format=gemini    pass=/_llm/openai/
                 key_file=%%TESTDIR%%/key;
    llm_provider azure     format=azure     pass=/_llm/openai/
                 key_file=%%TESTDIR%%/key api_version=2024-10-21;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            client_max_body_size 20m;
            llm_max_response_size 8m;
            llm_fallback off;
            llm_route  gpt-4o   openai:good;
            llm_route  claude   anthropic:claude-good;
            llm_route  gemini   gemini:gemini-good;
            llm_route  az       azure:dep-good;
            llm_route  echokey  openai:fault-echokey;
            llm_route  echokey-anthropic  anthropic:fault-echokey;
            llm_route  *        openai;
        }

        location /azure/ {
            llm_gateway;
            llm_route  *        azure;
        }

        location /gemini/ {
            llm_gateway;
            llm_route  *        gemini;
        }

        location /small/ {
            llm_gateway;
            llm_route  claude   anthropic:claude-good;
            llm_route  *        openai;
        }

        location /limit/ {
            llm_gateway;
            llm_max_response_size 64k;
            llm_route  gpt-4o   openai:good;
            llm_route  claude   anthropic:claude-good;
        }
EOF
    . proxy_location('openai')
    . "    }\n}\n");
$t->run;

my $msgs = '"messages":[{"role":"user","content":"hi"}]';

# the head of a raw response: no header the client chose, no early end
sub head_clean {
    my ($r, $name) = @_;
    my $raw = $r->{raw};
    my $i = index($raw, "\r\n\r\n");
    my $head = $i < 0 ? $raw : substr($raw, 0, $i);
    unlike($head, qr/injected|set-cookie/i, "$name: no injected header");
    unlike($raw, qr/<script>/, "$name: no injected body");
    unlike($head, qr/\x00/, "$name: no NUL in headers");
}

# 1, 3. model names: one rule, before routing, 400 naming model

for my $case (
    [ "x\r\nSet-Cookie: injected=1; Path=/", 'CRLF' ],
    [ "x\r\nContent-Type: text/html\r\n\r\n<script>alert(1)</script>",
      'header block end' ],
    [ "x\nSet-Cookie: injected=1", 'bare LF' ],
    [ "x\tinjected", 'tab' ],
    [ "gpt 4o", 'space' ],
    [ "gpt-\x{e9}", 'non-ASCII' ],
    [ 'm' x 257, '257 bytes' ],
    [ '../../v1/x', 'dot-dot' ],
    [ 'a/../b', 'dot-dot segment' ],
    [ '..', 'dot-dot alone' ],
    [ 'a/./b', 'dot segment' ],
    [ '..\\x', 'dot-dot backslash' ],
)
{
    my ($model, $name) = @$case;
    for my $stream (0, 1) {
        my $r = chat($t, $model, stream => $stream);
        my $n = "model $name" . ($stream ? ', stream' : '');
        my $e = refused($r, 'invalid_value', $n);
        is($e->{param}, 'model', "$n: param model");
        head_clean($r, $n);
        unlike($r->{body}, qr/injected|script|m{100}/,
            "$n: the name is not echoed");
    }
}

# a NUL as an escape is refused as JSON (jansson refuses it too)
my $r = post($t, '{"model":"x\u0000y",' . $msgs . '}');
is($r->{status}, 400, 'model with \u0000: 400');
head_clean($r, 'model with \u0000');

# the same names through JSON escapes
$r = post($t, '{"model":"x\r\nSet-Cookie: injected=1",' . $msgs . '}');
refused($r, 'invalid_value', 'escaped CRLF');
head_clean($r, 'escaped CRLF');

# a 1.5 MB name: refused, not echoed
$r = post($t, '{"model":"' . ('n' x 1_500_000) . '",' . $msgs . '}');
refused($r, 'invalid_value', '1.5 MB name');
cmp_ok(length($r->{raw}), '<', 2000, '1.5 MB name: a short answer');

# names that real providers use pass, unchanged
for my $model ('meta-llama/Llama-3.1-8B-Instruct', 'llama3.2:3b-q4_K_M',
    '@cf/meta/llama-3-8b', 'claude-3-5-sonnet@20240620',
    'accounts/fireworks/models/x', 'a..b', 'v0.1', 'm' x 256)
{
    mock_reset($t);
    $r = chat($t, $model);
    is($r->{status}, 200, "model $model: 200");
    is($r->{headers}{'x-llm-model'}, $model, "model $model: header");
    is((mock_last($t) // {})->{json}{model}, $model,
        "model $model: the provider got it");
}

# formats that put the model into the path take fewer names
mock_reset($t);
$r = chat($t, 'a/b', uri => '/azure/chat/completions');
is($r->{status}, 400, 'azure, slash: 400');
is(($r->{json} // {})->{error}{param}, 'model', 'azure, slash: param model');
$r = chat($t, 'a:b', uri => '/gemini/chat/completions');
is($r->{status}, 400, 'gemini, colon: 400');
is(scalar @{ mock_requests($t) }, 0, 'azure, gemini: nothing sent');
$r = chat($t, 'dep-1.x_y', uri => '/azure/chat/completions');
is($r->{status}, 200, 'azure, plain deployment: 200');
like((mock_last($t) // {})->{url} // '', qr{^/openai/deployments/dep-1\.x_y/},
    'azure, plain deployment: its path');

# 2. no client text forges a log line

$r = chat($t, "x\n2026/01/01 00:00:00 [emerg] 1#1: forged");
is($r->{status}, 400, 'log forgery: 400');
$r = chat($t, 'no-such"model', uri => '/gemini/chat/completions');
is($r->{status}, 400, 'gemini, quote: 400');
unlike($t->error_log, qr/^2026\/01\/01|forged/m, 'no forged log line');
like($t->error_log, qr/invalid model name "no-such\\x22model"/,
    'a quote in a logged name is escaped');

# 7. duplicate members the gateway reads are refused

$r = post($t, '{"model":"gpt-4o","model":"other",' . $msgs . '}');
my $e = refused($r, 'duplicate_parameter', 'duplicate model');
is($e->{param}, 'model', 'duplicate model: param');
$r = post($t, '{"model":"gpt-4o",' . $msgs . ',' . $msgs . '}');
$e = refused($r, 'duplicate_parameter', 'duplicate messages');
is($e->{param}, 'messages', 'duplicate messages: param');
$r = post($t, '{"model":"gpt-4o","stream":false,"stream":true,' . $msgs . '}');
refused($r, 'duplicate_parameter', 'duplicate stream');

# 9. "stream": null is documented as false
$r = post($t, '{"model":"gpt-4o","stream":null,' . $msgs . '}');
is($r->{status}, 200, 'stream null: 200');
like($r->{headers}{'content-type'} // '', qr{application/json},
    'stream null: not a stream');

# a duplicate inside a message is the provider's business
$r = post($t, '{"model":"gpt-4o","messages":[{"role":"user","role":"user",'
    . '"content":"hi"}]}');
is($r->{status}, 200, 'duplicate inside a message: passed on');

# 4. bodies the gateway location accepts reach the provider, whatever the
# pass location's client_max_body_size (default 1m)

for my $model ('gpt-4o', 'claude', 'gemini', 'az') {
    mock_reset($t);
    $r = chat($t, $model, text => 'x' x (2 * 1024 * 1024));
    is($r->{status}, 200, "$model: 2 MB body: 200")
        or diag(substr($r->{raw}, 0, 300));
    cmp_ok(length((mock_last($t) // {})->{body} // ''), '>', 2 * 1024 * 1024,
        "$model: 2 MB body: the provider got it");
}

# at the default limits (1m in both locations), a body under 1m that
# translation into Anthropic's format (a content block per turn) grows
# past 1m
my @turns = map { { role => $_ % 2 ? 'assistant' : 'user', content => 'hi' } }
    0 .. 24_000;
mock_reset($t);
$r = chat($t, 'claude', messages => \@turns, uri => '/small/chat/completions',
    body => { temperature => 0.5, tools => [{ type => 'function',
        function => { name => 'f', parameters => { type => 'object' } } }] });
is($r->{status}, 200, 'anthropic, grown past 1m by translation: 200')
    or diag(substr($r->{raw}, 0, 300));
cmp_ok(length((mock_last($t) // {})->{body} // ''), '>', 1024 * 1024,
    'anthropic, grown past 1m by translation: the provider got it');

# the gateway location's own limit still applies, as JSON
$r = chat($t, 'gpt-4o', text => 'x' x (1100 * 1024),
    uri => '/small/chat/completions');
is($r->{status}, 413, 'over the gateway limit: 413');
is(($r->{json} // {})->{error}{code}, 'request_too_large',
    'over the gateway limit: request_too_large');

# 5. the key never comes back from a provider

for my $model ('echokey', 'echokey-anthropic') {
    $r = chat($t, $model);
    is($r->{status}, 401, "$model: the provider's 401")
        or diag(substr($r->{raw}, 0, 300));
    unlike($r->{raw}, qr/\Q$KEY\E/, "$model: no key in the error");
    like($r->{body}, qr/\[redacted\]/, "$model: redacted");
}

for my $model ('gpt-4o', 'claude', 'gemini', 'az') {
    $r = chat($t, $model, text => 'say __echo_key__');
    is($r->{status}, 200, "$model: key in the answer: 200");
    unlike($r->{raw}, qr/\Q$KEY\E/, "$model: key in the answer: redacted");
    like($r->{body}, qr/\[redacted\]/, "$model: key in the answer: marked");

    $r = chat($t, $model, text => 'say __echo_key__', stream => 1);
    unlike($r->{raw}, qr/\Q$KEY\E/, "$model: key in a stream: redacted");
    like($r->{text} // '', qr/\[redacted\]/, "$model: key in a stream: marked");
}

# 6. invalid UTF-8 from a provider becomes U+FFFD, in every format

for my $model ('gpt-4o', 'claude', 'gemini', 'az') {
    $r = chat($t, $model, text => 'say __bad_utf8__ ok');
    is($r->{status}, 200, "$model: invalid UTF-8 answer: 200");
    unlike($r->{raw}, qr/\xff\xfe/, "$model: invalid bytes replaced");
    like($r->{body}, qr/\xef\xbf\xbd/, "$model: U+FFFD");
    ok($r->{json}, "$model: the answer is valid JSON");

    $r = chat($t, $model, text => 'say __bad_utf8__ ok', stream => 1);
    is($r->{status}, 200, "$model: invalid UTF-8 stream: 200");
    unlike($r->{raw}, qr/\xff\xfe/, "$model: stream: invalid bytes replaced");
    ok($r->{done}, "$model: stream: complete");
    is(scalar(grep { !defined json_decode($_) } grep { $_ ne '[DONE]' }
        @{ $r->{data} }), 0, "$model: stream: every event valid JSON");
}

# 8. an oversized answer or stream event says so

$r = chat($t, 'gpt-4o', text => 'x' x (70 * 1024),
    uri => '/limit/chat/completions');
is($r->{status}, 502, 'oversized answer: 502');
like(($r->{json} // {})->{error}{message} // '', qr/llm_max_response_size/,
    'oversized answer: the message names the limit');

for my $model ('gpt-4o', 'claude') {
    $r = chat($t, $model, text => 'y' x (70 * 1024), stream => 1,
        uri => '/limit/chat/completions');
    my ($err) = grep { $_->{error} } @{ $r->{chunks} // [] };
    $err //= ($r->{json} // {});
    like(($err->{error} // {})->{message} // '', qr/llm_max_response_size/,
        "$model: oversized stream event: the message names the limit")
        or diag(substr($r->{body}, 0, 300));
    unlike(($err->{error} // {})->{message} // '', qr/closed/,
        "$model: oversized stream event: not called a closed connection");
}

like($t->error_log, qr/longer than llm_max_response_size/,
    'the oversized event is logged as such');
unlike($t->error_log, qr/\Q$KEY\E/, 'no key in the error log');

$t->done;
