#!/usr/bin/perl

# An anthropic-format provider: OpenAI requests translated to Messages,
# answers (JSON and SSE) translated back, errors mapped.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $KEY = 'sk-ant-test-0123456789';

$t->write_file('anthropic.key', "$KEY\n");
$t->write_conf(<<'EOF' . proxy_location('anthropic') . "    }\n}\n");
http {
    llm_provider anthropic format=anthropic pass=/_llm/anthropic/
                 key_file=%%TESTDIR%%/anthropic.key;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  claude       anthropic:claude-sonnet-4-5;
            llm_route  claude-drip  anthropic:fault-drip;
            llm_route  claude-529   anthropic:fault-529;
            llm_route  claude-429   anthropic:fault-429;
            llm_route  claude-401   anthropic:fault-401;
        }
EOF
$t->run;

my $T = JSON::PP::true;
my %client = ('Authorization' => 'Bearer sk-client-secret');
chat_defaults($t, headers => \%client);

my $tools = [{ type => 'function', function => { name => 'get_weather',
    description => 'Weather of a city',
    parameters => { type => 'object',
        properties => { city => { type => 'string' } },
        required => ['city'] } } }];

# text of an Anthropic "system" (string or text blocks)
sub system_text {
    my ($s) = @_;
    return $s unless ref $s;
    return join "\n", map { $_->{text} } @$s;
}

###############################################################################
# a plain conversation: written from the client's bytes, not through a tree;
# the provider must see the same request the tree would give

for my $case (
    [ 'plain', { max_completion_tokens => 77, top_p => 0.9,
                 temperature => 1.5 } ],
    [ 'tree', { max_completion_tokens => 77, top_p => 0.9,
                temperature => 1.5, seed => 1 } ],
) {
    my ($name, $params) = @$case;
    my $r = chat($t, {
        model => 'claude', %$params,
        messages => [
            { role => 'developer', content => "Be \"terse\".\n" },
            { role => 'user', content => "caf\x{e9} \x{1f600}?" },
            { role => 'assistant', content => 'Yes.' },
            { role => 'user', content => 'And then?' },
        ],
    });
    is($r->{status}, 200, "$name conversation: status") or diag($r->{body});
    my $b = (mock_last($t) // {})->{json} // {};
    is($b->{model}, 'claude-sonnet-4-5', "$name: model");
    is($b->{max_tokens}, 77, "$name: max_completion_tokens -> max_tokens");
    is($b->{temperature}, 1, "$name: temperature clamped to 1");
    is($b->{top_p}, 0.9, "$name: top_p");
    is(system_text($b->{system}), "Be \"terse\".\n", "$name: system");
    is_deeply([ map { $_->{role} } @{ $b->{messages} // [] } ],
        [qw(user assistant user)], "$name: turns");
    is_deeply($b->{messages}[0]{content},
        [{ type => 'text', text => "caf\x{e9} \x{1f600}?" }],
        "$name: text blocks, characters kept");
    ok(!exists $b->{stream}, "$name: no stream");
}

###############################################################################
# request translation

my $r = chat($t, {
    model => 'claude',
    temperature => 0.5,
    stop => 'END',
    tools => $tools,
    messages => [
        { role => 'system', content => 'You are terse.' },
        { role => 'system', content => 'Answer in French.' },
        { role => 'user', content => 'What is the weather in Paris?' },
        { role => 'assistant', content => undef, tool_calls => [{
            id => 'call_abc', type => 'function',
            function => { name => 'get_weather',
                arguments => '{"city":"Paris"}' } }] },
        { role => 'tool', tool_call_id => 'call_abc', content => 'sunny' },
    ],
});

is($r->{status}, 200, 'tool result turn: status') or diag($r->{body});
my $q = mock_last($t);
is($q->{path}, '/v1/messages', 'provider path');
is($q->{headers}{'x-api-key'}, $KEY, 'x-api-key');
is($q->{headers}{'anthropic-version'}, '2023-06-01', 'anthropic-version');
ok(!exists $q->{headers}{authorization}, 'no Authorization');
like($q->{headers}{'content-type'} // '', qr{^application/json},
    'content-type');

my $b = $q->{json} // {};
is($b->{model}, 'claude-sonnet-4-5', 'model mapped');
is($b->{max_tokens}, 4096, 'max_tokens default 4096');
like(system_text($b->{system}) // '', qr/You are terse\.\s*Answer in French\./,
    'system messages joined, in order');
ok(!(grep { $_->{role} eq 'system' } @{ $b->{messages} // [] }),
    'no system role in messages');
is_deeply($b->{stop_sequences}, ['END'], 'stop -> stop_sequences');
ok(!exists $b->{stop}, 'no stop field');
is($b->{temperature}, 0.5, 'temperature');
is($b->{tools}[0]{name}, 'get_weather', 'tools: name');
is_deeply($b->{tools}[0]{input_schema}, $tools->[0]{function}{parameters},
    'tools: input_schema');
is($b->{tools}[0]{description}, 'Weather of a city', 'tools: description');

my $m = $b->{messages} // [];
is(scalar @$m, 3, 'three turns');
is($m->[0]{role}, 'user', 'turn 1 user');
is($m->[1]{role}, 'assistant', 'turn 2 assistant');
my ($tu) = grep { $_->{type} eq 'tool_use' } @{ ref $m->[1]{content}
    ? $m->[1]{content} : [] };
is($tu->{id}, 'call_abc', 'tool_use id');
is($tu->{name}, 'get_weather', 'tool_use name');
is_deeply($tu->{input}, { city => 'Paris' }, 'tool_use input is an object');
is($m->[2]{role}, 'user', 'tool message -> user turn');
my ($tr) = grep { $_->{type} eq 'tool_result' } @{ ref $m->[2]{content}
    ? $m->[2]{content} : [] };
is($tr->{tool_use_id}, 'call_abc', 'tool_result tool_use_id');
my $trc = ref $tr->{content}
    ? join('', map { $_->{text} // '' } @{ $tr->{content} })
    : $tr->{content};
is($trc, 'sunny', 'tool_result content');

# response translation: text
is($r->{json}{object}, 'chat.completion', 'object');
is($r->{json}{choices}[0]{message}{role}, 'assistant', 'role');
is($r->{json}{choices}[0]{message}{content},
    'echo: What is the weather in Paris?', 'text content');
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'end_turn -> stop');
ok(!$r->{json}{choices}[0]{message}{tool_calls}, 'no tool_calls');
my $u = $r->{json}{usage} // {};
ok($u->{prompt_tokens} > 0 && $u->{completion_tokens} == 7
    && $u->{total_tokens} == $u->{prompt_tokens} + 7, 'usage')
    or diag(json_encode($u));
is(($u->{prompt_tokens_details} // {})->{cached_tokens}, 0,
    'cache_read_input_tokens -> cached_tokens');
is($r->{json}{id} // '', ($r->{json}{id} // '') =~ /^msg_/ ? $r->{json}{id}
    : 'an Anthropic message id', 'id from the provider');
is($r->{headers}{'x-llm-provider'}, 'anthropic', 'x-llm-provider');
is($r->{headers}{'x-llm-model'}, 'claude-sonnet-4-5', 'x-llm-model');

# client max_tokens / max_completion_tokens, stop array
$r = chat($t, { model => 'claude', max_tokens => 100,
    stop => ['A', 'B'], messages => [{ role => 'user', content => 'hi' }] });
is($r->{status}, 200, 'max_tokens: status');
$q = mock_last($t);
is($q->{json}{max_tokens}, 100, 'client max_tokens');
is_deeply($q->{json}{stop_sequences}, ['A', 'B'], 'stop array');

$r = chat($t, { model => 'claude', max_completion_tokens => 50,
    messages => [{ role => 'user', content => 'hi' }] });
is(mock_last($t)->{json}{max_tokens}, 50, 'max_completion_tokens');

# content parts and consecutive user turns
$r = chat($t, { model => 'claude', messages => [
    { role => 'user', content => [{ type => 'text', text => 'part one' }] },
    { role => 'user', content => 'part two' } ] });
is($r->{status}, 200, 'consecutive user turns accepted') or diag($r->{body});
like($r->{json}{choices}[0]{message}{content} // '', qr/^echo: part one.*part two$/s,
    'consecutive user turns: answer');
is(scalar(grep { $_->{role} eq 'user' } @{ mock_last($t)->{json}{messages} }),
    1, 'consecutive user turns merged');

###############################################################################
# response translation: tool call

$r = chat($t, { model => 'claude', tools => $tools,
    messages => [{ role => 'user', content => 'Paris' }] });
is($r->{status}, 200, 'tool call: status');
my $msg = $r->{json}{choices}[0]{message} // {};
is($r->{json}{choices}[0]{finish_reason}, 'tool_calls',
    'tool_use -> tool_calls');
is($msg->{content}, 'I will use get_weather.', 'text before the tool call');
my $tc = $msg->{tool_calls}[0] // {};
ok($tc->{id}, 'tool call id');
is($tc->{type}, 'function', 'tool call type');
is($tc->{function}{name}, 'get_weather', 'tool call name');
ok(!ref $tc->{function}{arguments}, 'arguments is a string');
is_deeply(json_decode($tc->{function}{arguments}), { q => 'Paris' },
    'tool call arguments');
is(scalar @{ $msg->{tool_calls} // [] }, 1, 'one tool call');

###############################################################################
# streaming: text

$r = stream($t, { model => 'claude',
    messages => [{ role => 'user', content => 'stream hi' }] });
is($r->{status}, 200, 'stream status');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'stream type');
is($r->{text}, 'echo: stream hi', 'stream text');
is($r->{chunks}[0]{choices}[0]{delta}{role}, 'assistant',
    'first chunk has the role');
is($r->{chunks}[0]{object}, 'chat.completion.chunk', 'chunk object');
my %ids = map { ($_->{id} // '') => 1 } @{ $r->{chunks} };
is(scalar keys %ids, 1, 'one id across chunks');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'stop' }
    @{ $r->{chunks} }), 'stream finish_reason stop');
ok($r->{done}, 'stream: data: [DONE]');
ok($r->{clean}, 'stream: clean chunked end');
ok(!(grep { defined $_->{event} && $_->{event} ne '' } @{ $r->{events} }),
    'no Anthropic event: lines reach the client');
ok(!(grep { ref $_->{usage} } @{ $r->{chunks} }), 'no usage unasked');

$r = stream($t, { model => 'claude',
    stream_options => { include_usage => $T },
    messages => [{ role => 'user', content => 'stream hi' }] });
my @u = grep { ref $_->{usage} } @{ $r->{chunks} };
is(scalar @u, 1, 'usage chunk');
ok(@u && $u[0]{usage}{prompt_tokens} == 2
    && $u[0]{usage}{completion_tokens} == 3, 'usage from message_start'
    . ' and message_delta') or diag(json_encode(\@u));
$q = mock_last($t);
ok($q->{json}{stream}, 'provider asked to stream');
ok(!exists $q->{json}{stream_options}, 'no stream_options to Anthropic');

###############################################################################
# streaming: tool call deltas

$r = stream($t, { model => 'claude', tools => $tools,
    messages => [{ role => 'user', content => 'Lyon' }] });
is($r->{status}, 200, 'tool stream status');
is($r->{text}, 'I will use get_weather.', 'tool stream: text');
my @td = map { @{ $_->{choices}[0]{delta}{tool_calls} // [] } }
    grep { @{ $_->{choices} // [] } } @{ $r->{chunks} };
ok(@td >= 2, 'tool call deltas');
is($td[0]{index}, 0, 'first tool call has OpenAI index 0');
ok($td[0]{id}, 'first delta: id');
is($td[0]{type}, 'function', 'first delta: type');
is($td[0]{function}{name}, 'get_weather', 'first delta: name');
ok(!(grep { ($_->{index} // -1) != 0 } @td), 'every delta index 0');
is(join('', map { $_->{function}{arguments} // '' } @td), '{"q":"Lyon"}',
    'arguments fragments join');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'tool_calls' }
    @{ $r->{chunks} }), 'stream finish_reason tool_calls');
ok($r->{done} && $r->{clean}, 'tool stream: [DONE], clean');

###############################################################################
# drip: every byte in its own read

$r = stream($t, { model => 'claude-drip', tools => $tools,
    messages => [{ role => 'user', content => 'drip drop' }] });
is($r->{status}, 200, 'drip stream status');
is($r->{text}, 'I will use get_weather.', 'drip stream: text');
@td = map { @{ $_->{choices}[0]{delta}{tool_calls} // [] } }
    grep { @{ $_->{choices} // [] } } @{ $r->{chunks} };
is(join('', map { $_->{function}{arguments} // '' } @td), '{"q":"drip drop"}',
    'drip stream: arguments');
ok($r->{done} && $r->{clean}, 'drip stream: [DONE], clean');

$r = chat($t, { model => 'claude-drip',
    messages => [{ role => 'user', content => 'drip json' }] });
is($r->{json}{choices}[0]{message}{content}, 'echo: drip json',
    'drip non-stream');

###############################################################################
# errors

$r = chat($t, { model => 'claude-529',
    messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 503, '529 -> 503');
is($r->{json}{error}{type}, 'overloaded_error', '529: type') or diag($r->{body});
ok($r->{json}{error}{message}, '529: message');
ok(exists $r->{json}{error}{code} && exists $r->{json}{error}{param},
    '529: OpenAI shape');

$r = stream($t, { model => 'claude-529',
    messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 503, '529 stream -> 503');
is(ref $r->{json}{error}, 'HASH', '529 stream: JSON error');

$r = chat($t, { model => 'claude-429',
    messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 429, 'rate_limit_error -> 429');
ok($r->{json}{error}{message}, 'rate limit: OpenAI shape');

$r = chat($t, { model => 'claude-401',
    messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 401, 'authentication_error -> 401');
ok($r->{json}{error}{message}, 'authentication: OpenAI shape');

unlike($t->error_log, qr/\Q$KEY\E/, 'key not in error.log');

$t->done;
