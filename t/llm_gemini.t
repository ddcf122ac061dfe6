#!/usr/bin/perl

# A gemini-format provider: OpenAI requests translated to generateContent,
# answers (JSON and SSE, CRLF-framed, no [DONE]) translated back,
# embeddings, errors.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $KEY = 'AIza-gemini-test-0123456789';

$t->write_file('gemini.key', "$KEY\n");
$t->write_conf(<<'EOF' . proxy_location('gemini') . "    }\n}\n");
http {
    llm_provider gemini format=gemini pass=/_llm/gemini/
                 key_file=%%TESTDIR%%/gemini.key;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  gem       gemini:gemini-2.0-flash;
            llm_route  gem-drip  gemini:fault-drip;
            llm_route  gem-503   gemini:fault-503;
            llm_route  gem-emb   gemini:text-embedding-004;
        }
EOF
$t->run;

my $T = JSON::PP::true;
my %client = ('Authorization' => 'Bearer sk-client-secret',
    'Cookie' => 'a=b');
chat_defaults($t, headers => \%client);

my $tools = [{ type => 'function', function => { name => 'get_weather',
    description => 'Weather of a city',
    parameters => { type => 'object',
        properties => { city => { type => 'string' } },
        required => ['city'] } } }];

sub parts_text {
    my ($c) = @_;
    return join '', map { $_->{text} // '' } @{ $c->{parts} // [] };
}

###############################################################################
# request translation

my $r = chat($t, {
    model => 'gem',
    temperature => 0.3,
    top_p => 0.9,
    max_tokens => 256,
    stop => ['STOP1'],
    tools => $tools,
    messages => [
        { role => 'system', content => 'You are terse.' },
        { role => 'user', content => 'Weather in Paris?' },
        { role => 'assistant', content => undef, tool_calls => [{
            id => 'call_g1', type => 'function',
            function => { name => 'get_weather',
                arguments => '{"city":"Paris"}' } }] },
        { role => 'tool', tool_call_id => 'call_g1', content => 'sunny' },
    ],
});

is($r->{status}, 200, 'status') or diag($r->{body});
my $q = mock_last($t);
is($q->{path}, '/v1beta/models/gemini-2.0-flash:generateContent',
    'generateContent path');
is($q->{headers}{'x-goog-api-key'}, $KEY, 'x-goog-api-key');
ok(!exists $q->{headers}{authorization}, 'no Authorization');
ok(!exists $q->{headers}{cookie}, 'no Cookie');
unlike($q->{url}, qr/key=/, 'key not in the URL');

my $b = $q->{json} // {};
ok(!exists $b->{model} && !exists $b->{messages},
    'no OpenAI fields in the body');
my $si = $b->{systemInstruction} // $b->{system_instruction};
is(parts_text($si), 'You are terse.', 'systemInstruction');
my $gc = $b->{generationConfig} // {};
is($gc->{temperature}, 0.3, 'temperature');
is($gc->{topP}, 0.9, 'topP');
is($gc->{maxOutputTokens}, 256, 'maxOutputTokens');
is_deeply($gc->{stopSequences}, ['STOP1'], 'stopSequences');
my $fd = $b->{tools}[0]{functionDeclarations}[0] // {};
is($fd->{name}, 'get_weather', 'functionDeclarations name');
is_deeply($fd->{parameters}, $tools->[0]{function}{parameters},
    'functionDeclarations parameters');

my $c = $b->{contents} // [];
is(scalar @$c, 3, 'three contents');
is($c->[0]{role}, 'user', 'user turn');
is(parts_text($c->[0]), 'Weather in Paris?', 'user text');
is($c->[1]{role}, 'model', 'assistant -> model');
my ($fc) = grep { $_->{functionCall} } @{ $c->[1]{parts} // [] };
is($fc->{functionCall}{name}, 'get_weather', 'functionCall name');
is_deeply($fc->{functionCall}{args}, { city => 'Paris' },
    'functionCall args object');
my ($fr) = grep { $_->{functionResponse} } @{ $c->[2]{parts} // [] };
is($c->[2]{role}, 'user', 'tool result turn role');
is($fr->{functionResponse}{name}, 'get_weather',
    'functionResponse name from the tool call');
is(ref $fr->{functionResponse}{response}, 'HASH',
    'functionResponse response is an object');
like(json_encode($fr->{functionResponse}{response} // {}), qr/sunny/,
    'functionResponse carries the content');

# response translation: text
is($r->{json}{object}, 'chat.completion', 'object');
is($r->{json}{choices}[0]{message}{content}, 'echo: Weather in Paris?',
    'content');
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'STOP -> stop');
my $u = $r->{json}{usage} // {};
ok($u->{prompt_tokens} > 0 && $u->{completion_tokens} == 4
    && $u->{total_tokens} == $u->{prompt_tokens} + 4, 'usage')
    or diag(json_encode($u));
is($r->{headers}{'x-llm-provider'}, 'gemini', 'x-llm-provider');
is($r->{headers}{'x-llm-model'}, 'gemini-2.0-flash', 'x-llm-model');

###############################################################################
# function call answer

$r = chat($t, { model => 'gem', tools => $tools,
    messages => [{ role => 'user', content => 'Rome' }] });
my $msg = $r->{json}{choices}[0]{message} // {};
is($r->{json}{choices}[0]{finish_reason}, 'tool_calls',
    'functionCall -> finish_reason tool_calls');
my $tc = $msg->{tool_calls}[0] // {};
ok($tc->{id}, 'tool call id made up');
is($tc->{type}, 'function', 'tool call type');
is($tc->{function}{name}, 'get_weather', 'tool call name');
is_deeply(json_decode($tc->{function}{arguments} // ''), { q => 'Rome' },
    'tool call arguments (a JSON string)');

###############################################################################
# streaming

$r = stream($t, { model => 'gem',
    messages => [{ role => 'user', content => 'stream this please' }] });
is($r->{status}, 200, 'stream status');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'stream type');
$q = mock_last($t);
is($q->{path}, '/v1beta/models/gemini-2.0-flash:streamGenerateContent',
    'streamGenerateContent path');
is($q->{query}{alt}, 'sse', 'alt=sse');
is($r->{text}, 'echo: stream this please', 'stream text');
is($r->{chunks}[0]{choices}[0]{delta}{role}, 'assistant', 'role first');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'stop' }
    @{ $r->{chunks} }), 'stream finish_reason stop');
ok($r->{done}, 'gateway adds data: [DONE]');
ok($r->{clean}, 'clean chunked end');
is(scalar(grep { $_ eq '[DONE]' } @{ $r->{data} }), 1, 'one [DONE]');
my %ids = map { ($_->{id} // '') => 1 } @{ $r->{chunks} };
is(scalar keys %ids, 1, 'one id across chunks');
ok(!(grep { /\r/ } @{ $r->{data} }), 'no CR in the client stream data');

$r = stream($t, { model => 'gem',
    stream_options => { include_usage => $T },
    messages => [{ role => 'user', content => 'count me' }] });
my @u = grep { ref $_->{usage} } @{ $r->{chunks} };
is(scalar @u, 1, 'stream usage chunk');
ok(@u && $u[0]{usage}{prompt_tokens} == 2
    && $u[0]{usage}{completion_tokens} == 3,
    'stream usage from the last usageMetadata') or diag(json_encode(\@u));

$r = stream($t, { model => 'gem', tools => $tools,
    messages => [{ role => 'user', content => 'Oslo' }] });
my @td = map { @{ $_->{choices}[0]{delta}{tool_calls} // [] } }
    grep { @{ $_->{choices} // [] } } @{ $r->{chunks} };
ok(@td >= 1, 'stream tool call delta');
is($td[0]{function}{name}, 'get_weather', 'stream tool call name');
ok($td[0]{id}, 'stream tool call id');
is($td[0]{index}, 0, 'stream tool call index');
is_deeply(json_decode(join '', map { $_->{function}{arguments} // '' } @td),
    { q => 'Oslo' }, 'stream tool call arguments');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'tool_calls' }
    @{ $r->{chunks} }), 'stream finish_reason tool_calls');
ok($r->{done} && $r->{clean}, 'tool stream [DONE], clean');

# drip: CRLF framing split across reads
$r = stream($t, { model => 'gem-drip',
    messages => [{ role => 'user', content => 'one byte at a time' }] });
is($r->{text}, 'echo: one byte at a time', 'drip stream text');
ok($r->{done} && $r->{clean}, 'drip stream [DONE], clean');

###############################################################################
# embeddings

$r = post($t, { model => 'gem-emb', input => 'single text' },
    uri => '/v1/embeddings');
is($r->{status}, 200, 'embedding status') or diag($r->{body});
is(scalar @{ $r->{json}{data} // [] }, 1, 'one embedding');
is(scalar @{ $r->{json}{data}[0]{embedding} // [] }, 16, 'values');
$q = mock_last($t);
like($q->{path}, qr{^/v1beta/models/text-embedding-004:(?:embedContent|batchEmbedContents)$},
    'embed path');
is($q->{headers}{'x-goog-api-key'}, $KEY, 'embed key');

$r = post($t, { model => 'gem-emb', input => ['first', 'second'] },
    uri => '/v1/embeddings');
is($r->{status}, 200, 'batch status') or diag($r->{body});
is(scalar @{ $r->{json}{data} // [] }, 2, 'two embeddings');
is($r->{json}{data}[1]{index}, 1, 'index');
isnt(json_encode($r->{json}{data}[0]{embedding}),
    json_encode($r->{json}{data}[1]{embedding}), 'different vectors');
$q = mock_last($t);
is($q->{path}, '/v1beta/models/text-embedding-004:batchEmbedContents',
    'batchEmbedContents path');
is($q->{json}{requests}[1]{content}{parts}[0]{text}, 'second',
    'batch request content');

# base64, as the OpenAI SDKs ask by default
$r = post($t, { model => 'gem-emb', input => 'b64',
    encoding_format => 'base64' }, uri => '/v1/embeddings');
my $e = $r->{json}{data}[0]{embedding};
ok(defined $e && !ref $e && length($e) == 88,
    'encoding_format base64 honoured (16 floats)') or diag($r->{body});

###############################################################################
# errors

$r = chat($t, { model => 'gem-503',
    messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 503, 'UNAVAILABLE -> 503');
ok($r->{json}{error}{message} && $r->{json}{error}{type},
    '503 OpenAI-shaped') or diag($r->{body});

unlike($t->error_log, qr/\Q$KEY\E/, 'key not in error.log');

$t->done;
