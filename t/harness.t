#!/usr/bin/perl

# The test harness and the mock provider themselves, through a plain nginx
# proxy (no module needed): the mock's wire formats and faults, the SSE
# reader, the error.log check.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;

my $t = LLMGW->new(no_module => 1);
my $mock = $t->run_mock;

$t->write_conf(<<'EOF');
http {
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK%%;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 2s;
        }
    }
}
EOF
$t->run;

my $p = $t->port(0);
my $user = { role => 'user', content => 'hello world' };

# OpenAI, plain
my $r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'gpt-x', messages => [$user] });
is($r->{status}, 200, 'openai status');
is($r->{json}{choices}[0]{message}{content}, 'echo: hello world',
    'openai echo');
is($r->{json}{object}, 'chat.completion', 'openai object');
ok($r->{json}{usage}{total_tokens} > 0, 'openai usage');

# OpenAI stream, usage only when asked
$r = http_stream($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'gpt-x', messages => [$user], stream => JSON::PP::true });
is($r->{text}, 'echo: hello world', 'openai stream text');
ok($r->{done}, 'openai stream [DONE]');
ok($r->{clean}, 'openai stream clean chunked end');
ok(!(grep { exists $_->{usage} } @{ $r->{chunks} }), 'no usage unasked');

$r = http_stream($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'gpt-x', messages => [$user], stream => JSON::PP::true,
      stream_options => { include_usage => JSON::PP::true } });
my @u = grep { ref $_->{usage} } @{ $r->{chunks} };
is(scalar @u, 1, 'one usage chunk when asked');
is_deeply($u[0]{choices}, [], 'usage chunk has no choices');

# tools
$r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'gpt-x', messages => [$user],
      tools => [{ type => 'function', function => { name => 'lookup',
          parameters => { type => 'object' } } }] });
is($r->{json}{choices}[0]{finish_reason}, 'tool_calls', 'tool call');
is($r->{json}{choices}[0]{message}{tool_calls}[0]{function}{arguments},
    '{"q":"hello world"}', 'tool call args');

# unknown parameter is rejected like OpenAI does
$r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'gpt-x', messages => [$user], bogus => 1 });
is($r->{status}, 400, 'openai unknown argument 400');

# recorded requests
my $reqs = mock_requests($t);
ok(@$reqs >= 4, 'requests recorded');
is($reqs->[0]{json}{model}, 'gpt-x', 'recorded body');
mock_reset($t);
is(scalar @{ mock_requests($t) }, 0, 'reset');

# Azure
$r = http_stream($t, $p, 'POST',
    '/openai/deployments/dep1/chat/completions?api-version=2024-10-21', {},
    { messages => [$user], stream => JSON::PP::true });
is($r->{text}, 'echo: hello world', 'azure stream');
is_deeply($r->{chunks}[0]{choices}, [], 'azure prompt filter chunk first');
$r = http($t, $p, 'POST', '/openai/deployments/dep1/chat/completions', {},
    { messages => [$user] });
is($r->{status}, 404, 'azure without api-version');

# Anthropic
my $ah = { 'anthropic-version' => '2023-06-01', 'x-api-key' => 'k' };
$r = http($t, $p, 'POST', '/v1/messages', $ah,
    { model => 'claude-x', max_tokens => 10, messages => [$user] });
is($r->{json}{content}[0]{text}, 'echo: hello world', 'anthropic echo');
is($r->{json}{stop_reason}, 'end_turn', 'anthropic stop_reason');
$r = http($t, $p, 'POST', '/v1/messages', $ah,
    { model => 'claude-x', messages => [$user] });
is($r->{status}, 400, 'anthropic needs max_tokens');
$r = http($t, $p, 'POST', '/v1/messages', {},
    { model => 'claude-x', max_tokens => 5, messages => [$user] });
is($r->{status}, 400, 'anthropic needs anthropic-version');
$r = http_stream($t, $p, 'POST', '/v1/messages', $ah,
    { model => 'claude-x', max_tokens => 10, messages => [$user],
      stream => JSON::PP::true,
      tools => [{ name => 'lookup', input_schema => { type => 'object' } }] });
my @names = map { $_->{event} } @{ $r->{events} };
is($names[0], 'message_start', 'anthropic message_start');
is($names[-1], 'message_stop', 'anthropic message_stop');
my $pj = join '', map { $_->{delta}{partial_json} // '' }
    @{ $r->{chunks} };
is($pj, '{"q":"hello world"}', 'anthropic input_json_delta');
$r = http($t, $p, 'POST', '/v1/messages', $ah,
    { model => 'fault-529', max_tokens => 10, messages => [$user] });
is($r->{status}, 529, 'anthropic 529');
is($r->{json}{error}{type}, 'overloaded_error', 'anthropic overloaded');

# Gemini
my $g = { contents => [{ role => 'user', parts => [{ text => 'hello world' }] }] };
$r = http($t, $p, 'POST', '/v1beta/models/gem-x:generateContent', {}, $g);
is($r->{json}{candidates}[0]{content}{parts}[0]{text}, 'echo: hello world',
    'gemini echo');
$r = http_stream($t, $p, 'POST',
    '/v1beta/models/gem-x:streamGenerateContent?alt=sse', {}, $g);
is(join('', map { $_->{candidates}[0]{content}{parts}[0]{text} }
    @{ $r->{chunks} }), 'echo: hello world', 'gemini stream');
ok(!$r->{done}, 'gemini sends no [DONE]');
like($r->{body}, qr/\r\n\r\n/, 'gemini frames with CRLF');
$r = http($t, $p, 'POST', '/v1beta/models/gem-x:embedContent', {},
    { content => { parts => [{ text => 'x' }] } });
is(scalar @{ $r->{json}{embedding}{values} }, 16, 'gemini embedContent');

# faults
$r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'fault-429', messages => [$user] });
is($r->{status}, 429, 'fault-429 status');
is($r->{headers}{'retry-after'}, '1', 'fault-429 retry-after');
ok($r->{headers}{'x-ratelimit-remaining-requests'} eq '0', 'x-ratelimit');

$r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'fault-truncated', messages => [$user] });
is($r->{status}, 200, 'truncated status');
ok(!defined $r->{json} && length $r->{body} > 10, 'truncated body');

$r = http_stream($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'fault-drop', messages => [$user], stream => JSON::PP::true });
is(scalar @{ $r->{data} }, 2, 'drop: two events');
ok(!$r->{clean}, 'drop: unclean end detected');

$r = http_stream($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'fault-drip', messages => [$user], stream => JSON::PP::true });
is($r->{text}, 'echo: hello world', 'drip stream');
ok($r->{done} && $r->{clean}, 'drip stream complete');
ok(@{ $r->{chunk_sizes} } > 100, 'drip: many chunks');

$r = http($t, $p, 'POST', '/v1/chat/completions', {},
    { model => 'fault-hang', messages => [$user] });
is($r->{status}, 504, 'hang -> nginx 504 (proxy_read_timeout)');

# the access log is in the test directory
ok(-s $t->testdir . '/access.log', 'access_log in the test dir');

# wait_until: the condition's value once true; false at the deadline,
# which it keeps
{
    my $n = 0;
    is((wait_until { ++$n >= 3 && "got $n" } interval => 0.01), 'got 3',
        'wait_until: the true value, after polling');
    my $start = Time::HiRes::time();
    ok(!(wait_until { 0 } timeout => 0.3, interval => 0.05),
        'wait_until: false at the deadline');
    my $took = Time::HiRes::time() - $start;
    ok($took >= 0.3 && $took < 1.5, 'wait_until: bounded by its timeout')
        or diag("took $took s");
}

# the log check finds what it must
$t->write_file('probe.log', '');
{
    my $c = $t->read_file('error.log');
    $t->write_file('error.log', $c . "2024/01/01 00:00:00 [alert] 1#1: x\n");
    my @bad = $t->bad_log_lines;
    is(scalar @bad, 1, 'log check sees [alert]');
    $t->write_file('error.log', $c);
}

$t->done;
