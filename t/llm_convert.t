#!/usr/bin/perl

# What the anthropic and gemini drivers send for the client's common
# parameters (tools, tool_choice, stop, max tokens, system messages,
# content parts, tool calls), compared whole, and the error event a
# provider's mid-stream error becomes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

# a provider's stream, written by a return: \" and \u escapes kept
my $anthropic_error = conf_text(<<'EOF');
event: message_start
data: {"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":3,"output_tokens":0}}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Over \"loaded\"\u00e9"}}

EOF

my $gemini_error = conf_text(<<'EOF');
data: {"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"index":0}],"modelVersion":"gem-x"}

data: {"error":{"code":500,"message":"Internal \"x\"","status":"INTERNAL"}}

EOF

# a text as a single-quoted string of nginx.conf
sub conf_text {
    my ($s) = @_;
    $s =~ s/\\/\\\\/g;
    $s =~ s/'/\\'/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

$t->write_conf(<<"EOF" . proxy_location('anthropic')
http {
    llm_provider anthropic format=anthropic pass=/_llm/anthropic/;
    llm_provider gemini    format=gemini    pass=/_llm/gemini/;
    llm_provider anth-err  format=anthropic pass=/_llm/anth-err/;
    llm_provider gem-err   format=gemini    pass=/_llm/gem-err/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  claude      anthropic:claude-sonnet-4-5;
            llm_route  gem         gemini:gemini-2.0-flash;
            llm_route  claude-err  anth-err:claude-x;
            llm_route  gem-err     gem-err:gem-x;
        }

        location /_llm/anth-err/ {
            internal;
            default_type text/event-stream;
            return 200 '$anthropic_error';
        }

        location /_llm/gem-err/ {
            internal;
            default_type text/event-stream;
            return 200 '$gemini_error';
        }
EOF
    . proxy_location('gemini') . "    }\n}\n");
$t->run;

my $T = JSON::PP::true;

my $schema = { type => 'object', '$schema' => 'x',
    additionalProperties => JSON::PP::false,
    properties => { city => { type => 'string',
        additionalProperties => JSON::PP::false } } };
my $clean = { type => 'object',
    properties => { city => { type => 'string' } } };

my $tools = [
    { type => 'function', function => { name => 'get_weather',
        description => 'Weather', parameters => $schema } },
    { type => 'function', function => { description => 'no name' } },
    { type => 'function', function => { name => 'now' } },
];

sub sent {
    my ($body) = @_;
    mock_reset($t);
    my $r = chat($t, $body);
    is($r->{status}, 200, "$body->{model}: status") or diag($r->{body});
    return (mock_last($t) // {})->{json} // {};
}

###############################################################################
# anthropic

my $b = sent({ model => 'claude', tools => $tools, tool_choice => 'auto',
    messages => [{ role => 'user', content => 'hi' }] });
is_deeply($b->{tools}, [
    { name => 'get_weather', description => 'Weather',
      input_schema => $schema },
    { name => 'now', input_schema => { type => 'object', properties => {} } },
], 'anthropic: tools, nameless left out, default schema');
is_deeply($b->{tool_choice}, { type => 'auto' }, 'anthropic: auto');

for my $case (
    [ 'required', undef, { type => 'any' } ],
    [ 'none', undef, { type => 'none' } ],
    [ { type => 'function', function => { name => 'now' } }, undef,
      { type => 'tool', name => 'now' } ],
    [ { type => 'function', function => {} }, undef, { type => 'auto' } ],
    [ undef, JSON::PP::false,
      { type => 'auto', disable_parallel_tool_use => $T } ],
    [ 'required', JSON::PP::false,
      { type => 'any', disable_parallel_tool_use => $T } ],
    [ 'none', JSON::PP::false, { type => 'none' } ],
    [ undef, undef, undef ],
) {
    my ($choice, $parallel, $want) = @$case;
    my %body = (model => 'claude', tools => $tools,
        messages => [{ role => 'user', content => 'hi' }]);
    $body{tool_choice} = $choice if defined $choice;
    $body{parallel_tool_calls} = $parallel if defined $parallel;
    $b = sent(\%body);
    is_deeply($b->{tool_choice}, $want, 'anthropic: tool_choice '
        . json_encode([$choice, $parallel]));
}

$b = sent({ model => 'claude', tool_choice => 'required',
    tools => [{ type => 'function', function => {} }],
    messages => [{ role => 'user', content => 'hi' }] });
ok(!exists $b->{tools} && !exists $b->{tool_choice},
    'anthropic: no named tool, no tools and no tool_choice');

$b = sent({ model => 'claude', max_tokens => 9, max_completion_tokens => 0,
    stop => '', seed => 1, user => 'u1',
    messages => [
        { role => 'system', content => 'A' },
        { role => 'user', content => [
            { type => 'text', text => 'one' },
            { type => 'image_url',
              image_url => { url => 'data:image/png;base64,AAAA' } },
            { type => 'image_url', image_url => 'https://x/y.jpg' },
            { type => 'input_audio', input_audio => {} },
        ] },
        { role => 'developer', content => [{ type => 'text', text => 'B' }] },
        { role => 'user', content => 'two' },
        { role => 'assistant', content => 'ok', tool_calls => [
            { id => 'c1', type => 'function',
              function => { name => 'now', arguments => 'not json' } },
            { id => 'c2', type => 'function',
              function => { name => 'get_weather',
                            arguments => '{"city":"Oslo"}' } } ] },
        { role => 'tool', tool_call_id => 'c1', content => '12:00' },
        { role => 'tool', tool_call_id => 'c2', content => '' },
        { role => 'critic', content => 'x' },
    ] });
is($b->{max_tokens}, 9, 'anthropic: max_tokens when max_completion 0');
ok(!exists $b->{stop_sequences}, 'anthropic: empty stop left out');
is($b->{system}, "A\n\nB", 'anthropic: system messages joined');
is_deeply($b->{metadata}, { user_id => 'u1' }, 'anthropic: user');
is_deeply($b->{messages}, [
    { role => 'user', content => [
        { type => 'text', text => 'one' },
        { type => 'image', source => { type => 'base64',
            media_type => 'image/png', data => 'AAAA' } },
        { type => 'image', source => { type => 'url',
            url => 'https://x/y.jpg' } },
        { type => 'text', text => 'two' } ] },
    { role => 'assistant', content => [
        { type => 'text', text => 'ok' },
        { type => 'tool_use', id => 'c1', name => 'now', input => {} },
        { type => 'tool_use', id => 'c2', name => 'get_weather',
          input => { city => 'Oslo' } } ] },
    { role => 'user', content => [
        { type => 'tool_result', tool_use_id => 'c1', content => '12:00' },
        { type => 'tool_result', tool_use_id => 'c2' } ] },
], 'anthropic: turns');

my $r = stream($t, { model => 'claude-err',
    messages => [{ role => 'user', content => 'hi' }] });
is($r->{status}, 200, 'anthropic stream error: status');
my ($e) = grep { ref $_->{error} } @{ $r->{chunks} // [] };
is_deeply($e, { error => { message => "Over \"loaded\"\x{e9}",
    type => 'overloaded_error', param => undef, code => undef } },
    'anthropic stream error: event') or diag($r->{body});
like($t->error_log, qr/stream error: overloaded_error: Over/,
    'anthropic stream error: logged');

###############################################################################
# gemini

$b = sent({ model => 'gem', tools => $tools, tool_choice => 'auto',
    temperature => 0.2, top_p => 0.5, max_tokens => 100,
    max_completion_tokens => 30, stop => ['S', '', 'T'], n => 2, seed => 7,
    response_format => { type => 'json_object' },
    messages => [
        { role => 'system', content => 'A' },
        { role => 'developer', content => 'B' },
        { role => 'user', content => [
            { type => 'text', text => 'look' },
            { type => 'image_url',
              image_url => { url => 'data:image/gif;base64,R0lG' } },
            { type => 'image_url', image_url => 'https://x/p.webp?s=1' } ] },
        { role => 'assistant', content => [{ type => 'text', text => 'k' }],
          tool_calls => [{ id => 'c9', type => 'function',
            function => { name => 'now', arguments => '{}' } }] },
        { role => 'tool', tool_call_id => 'c9', content => '{"t":1}' },
        { role => 'tool', tool_call_id => 'zz', name => 'get_weather',
          content => 'rain' },
    ] });
is_deeply($b->{tools}, [{ functionDeclarations => [
    { name => 'get_weather', description => 'Weather', parameters => $clean },
    { name => 'now' } ] }], 'gemini: tools, schema cleaned');
is_deeply($b->{toolConfig}, { functionCallingConfig => { mode => 'AUTO' } },
    'gemini: auto');
is_deeply($b->{generationConfig}, { temperature => 0.2, topP => 0.5,
    maxOutputTokens => 30, stopSequences => ['S', 'T'], candidateCount => 2,
    seed => 7, responseMimeType => 'application/json' },
    'gemini: generationConfig');
is_deeply($b->{systemInstruction}, { parts => [{ text => 'A' },
    { text => 'B' }] }, 'gemini: systemInstruction');
is_deeply($b->{contents}, [
    { role => 'user', parts => [
        { text => 'look' },
        { inlineData => { mimeType => 'image/gif', data => 'R0lG' } },
        { fileData => { mimeType => 'image/webp',
            fileUri => 'https://x/p.webp?s=1' } } ] },
    { role => 'model', parts => [
        { text => 'k' },
        { functionCall => { name => 'now', args => {} } } ] },
    { role => 'user', parts => [
        { functionResponse => { name => 'now', response => { t => 1 } } },
        { functionResponse => { name => 'get_weather',
            response => { content => 'rain' } } } ] },
], 'gemini: contents');

for my $case (
    [ 'required', { mode => 'ANY' } ],
    [ 'none', { mode => 'NONE' } ],
    [ { type => 'function', function => { name => 'now' } },
      { mode => 'ANY', allowedFunctionNames => ['now'] } ],
) {
    my ($choice, $want) = @$case;
    $b = sent({ model => 'gem', tools => $tools, tool_choice => $choice,
        messages => [{ role => 'user', content => 'hi' }] });
    is_deeply($b->{toolConfig}, { functionCallingConfig => $want },
        'gemini: tool_choice ' . json_encode($choice));
}

$b = sent({ model => 'gem', max_tokens => 0, stop => [''],
    messages => [{ role => 'user', content => 'hi' }] });
ok(!exists $b->{generationConfig} && !exists $b->{tools}
    && !exists $b->{toolConfig}, 'gemini: nothing to configure');

$r = stream($t, { model => 'gem-err',
    messages => [{ role => 'user', content => 'hi' }] });
is($r->{status}, 200, 'gemini stream error: status');
($e) = grep { ref $_->{error} } @{ $r->{chunks} // [] };
is_deeply($e, { error => { message => 'Internal "x"', type => 'api_error',
    param => undef, code => 'INTERNAL' } }, 'gemini stream error: event')
    or diag($r->{body});
like($t->error_log, qr/stream error: INTERNAL: Internal/,
    'gemini stream error: logged');

done_testing();
