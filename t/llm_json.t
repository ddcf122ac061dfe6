#!/usr/bin/perl

# The client's body as the gateway reads it without a full parse: the
# validating scanner, and the OpenAI body spliced with the target's model
# and stream_options.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

$t->write_conf(<<'EOF'
http {
    llm_provider openai format=openai pass=/_llm/openai/;
    llm_provider anthropic format=anthropic pass=/_llm/openai/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  gpt-4o   openai:good;
            llm_route  'we"ird' 'openai:q"uote';
            llm_route  claude   anthropic:claude-good;
            llm_route  *        openai;
        }
EOF
    . proxy_location('openai')
    . "    }\n}\n");
$t->run;

# a body refused: 400 with this error code
sub bad {
    my ($body, $code, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    refused(post($t, $body), $code, $name);
}

my $msgs = '"messages":[{"role":"user","content":"hi"}]';

bad('{"model":"gpt-4o",' . $msgs . ',}', 'invalid_json', 'trailing comma');
bad('{"model":"gpt-4o",' . $msgs . '} x', 'invalid_json', 'trailing bytes');
bad('{"model":"gpt-4o",' . $msgs . '', 'invalid_json', 'unterminated');
bad('{"model":"gpt-4o","n":01,' . $msgs . '}', 'invalid_json',
    'leading zero');
bad('{"model":"gpt-4o","n":1.,' . $msgs . '}', 'invalid_json',
    'bare decimal point');
bad(qq({"model":"gpt\x01",$msgs}), 'invalid_json', 'control character');
bad('{"model":"gpt\\x",' . $msgs . '}', 'invalid_json', 'bad escape');
bad('{"model":"gpt\\u12",' . $msgs . '}', 'invalid_json', 'short \\u');
bad('{"model":tru,' . $msgs . '}', 'invalid_json', 'bad literal');
bad('{"model":"gpt-4o","x":' . ('[' x 5000) . (']' x 5000) . ','
    . $msgs . '}', 'invalid_json', 'nesting too deep');
bad('[1,2]', 'invalid_type', 'an array');
bad('"text"', 'invalid_type', 'a string');
bad('{"model":"gpt-4o","messages":[ ]}', 'empty_array', 'empty messages');
bad('{"model":"gpt-4o","messages":{}}', 'invalid_type', 'messages object');
bad('{"model":"gpt-4o","stream":"yes",' . $msgs . '}', 'invalid_type',
    'stream string');
bad('{"model":5,' . $msgs . '}', 'invalid_type', 'model number');
bad('{"model":"",' . $msgs . '}', 'invalid_type', 'model empty');
bad('{"model":null,' . $msgs . '}', 'missing_required_parameter',
    'model null');

# a deep but acceptable document passes
my $r = post($t, '{"model":"gpt-4o","tools":[{"type":"function","function":'
    . '{"name":"f","parameters":{"type":"object","x":' . ('[' x 100)
    . (']' x 100) . '}}}],' . $msgs . '}');
is($r->{status}, 200, 'nesting 100: accepted') or diag($r->{body});

# escapes in the model name are read as JSON strings
$r = post($t, '{"model":"gpt\\u002d4o",' . $msgs . '}');
is($r->{status}, 200, 'escaped model name: routed');
is($r->{headers}{'x-llm-model'}, 'good', 'escaped model name: its route');

# a target model that needs escaping is written as a JSON string
mock_reset($t);
$r = post($t, '{"model":"we\\"ird",' . $msgs . '}');
is($r->{headers}{'x-llm-model'}, 'q"uote', 'quote in names: route found');
my $q = mock_last($t);
is($q->{json}{model}, 'q"uote', 'quote in names: provider got valid JSON');

# catch-all: the body goes out byte for byte
mock_reset($t);
my $body = '{ "model" : "free-model" , "temperature":0.5,'
    . '"messages":[{"role":"user","content":"caf\u00e9 \\u00e9 \\n"}]}';
$r = post($t, $body);
is($r->{status}, 200, 'catch-all: 200');
$q = mock_last($t);
is($q->{body}, $body, 'catch-all: body unchanged');

# streams: stream_options is added, or replaced when the client sent it
mock_reset($t);
$r = post($t, '{"stream":true,"model":"gpt-4o",' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: stream_options added');
is($q->{json}{model}, 'good', 'stream: model replaced');
unlike($r->{body}, qr/"choices":\[\]/, 'stream: no usage chunk unasked');
like($r->{body}, qr/data: \[DONE\]\n\n$/, 'stream: [DONE]');

mock_reset($t);
$r = post($t, '{"model":"gpt-4o","stream_options":{"include_usage":true},'
    . '"stream":true,' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: client stream_options kept');
like($r->{body}, qr/"choices":\[\],"usage":\{"prompt_tokens":\d+/,
    'stream: usage chunk when asked');

mock_reset($t);
$r = post($t, '{"model":"gpt-4o","stream_options":{"include_usage":false},'
    . '"stream":true,' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: include_usage false replaced');
unlike($r->{body}, qr/"choices":\[\]/, 'stream: no usage chunk when false');

# an Anthropic target parses the body into a tree when it is more than a
# plain conversation (here: tools); invalid UTF-8 is refused there as by the
# scanner
my $tools = '"tools":[{"type":"function","function":{"name":"f",'
    . '"parameters":{"type":"object"}}}]';
$r = post($t, qq({"model":"claude",$tools,$msgs}));
is($r->{status}, 200, 'anthropic target: 200');
$r = post($t, qq({"model":"claude",$tools,)
    . qq("messages":[{"role":"user","content":"\xff"}]}));
is($r->{status}, 400, 'anthropic target, invalid UTF-8: 400');
is(($r->{json} // {})->{error}{code}, 'invalid_json',
    'anthropic target, invalid UTF-8: invalid_json');

# the scanner refuses what jansson refuses, so a body is valid or not
# whatever the target's format: the OpenAI one (the body goes out as it
# came) and the Anthropic one

sub conv {
    my ($model, $content, $extra) = @_;
    return qq({"model":"$model",) . ($extra // '')
        . qq("messages":[{"role":"user","content":"$content"}]});
}

my @invalid = (
    [ 'raw invalid UTF-8', "caf\xff" ],
    [ 'truncated UTF-8', "caf\xc3" ],
    [ 'overlong encoding', "\xc0\xaf" ],
    [ 'encoded surrogate', "\xed\xa0\x80" ],
    [ 'above U+10FFFF', "\xf4\x90\x80\x80" ],
    [ '\\u0000', 'a\\u0000b' ],
    [ 'lone low surrogate escape', '\\udc00' ],
    [ 'high surrogate escape alone', '\\ud83dx' ],
    [ 'high surrogate escape, no low one', '\\ud83d\\u0041' ],
    [ '1e999', 'hi', '"temperature":1e999,' ],
    [ '-1e400', 'hi', '"temperature":-1e400,' ],
    [ 'max_tokens 99999999999999999999', 'hi',
      '"max_tokens":99999999999999999999,' ],
);

my @valid = (
    [ 'raw UTF-8', "caf\xc3\xa9", "caf\x{e9}" ],
    [ 'raw 4-byte UTF-8', "\xf0\x9f\x98\x80", "\x{1f600}" ],
    [ 'surrogate pair escape', '\\ud83d\\ude00', "\x{1f600}" ],
    [ '1e-999', 'hi', 'hi', '"temperature":1e-999,' ],
    [ 'max_tokens 9223372036854775807', 'hi', 'hi',
      '"max_tokens":9223372036854775807,' ],
);

# the text of a message, a string or (Anthropic) a list of blocks
sub text {
    my ($c) = @_;
    return ref $c eq 'ARRAY' ? join('', map { $_->{text} // '' } @$c) : $c;
}

for my $model ('gpt-4o', 'claude') {
    for my $c (@invalid) {
        bad(conv($model, $c->[1], $c->[2]), 'invalid_json',
            "$model, $c->[0]");
    }

    for my $c (@valid) {
        mock_reset($t);
        $r = post($t, conv($model, $c->[1], $c->[3]));
        is($r->{status}, 200, "$model, $c->[0]: 200") or diag($r->{body});
        $q = mock_last($t);
        ok((text(($q->{json} // {})->{messages}[0]{content}) // '')
           eq $c->[2],
           "$model, $c->[0]: the provider's text");
    }
}

# values nested 2048 deep at most, as for jansson (the top one counts)

sub nested {
    my ($model, $n, $inner) = @_;
    return qq({"model":"$model","tools":[{"type":"function","function":)
        . '{"name":"f","parameters":{"type":"object","x":' . ('[' x $n)
        . $inner . (']' x $n) . '}}}],' . $msgs . '}';
}

for my $model ('gpt-4o', 'claude') {
    $r = post($t, nested($model, 2043, ''));
    is($r->{status}, 200, "$model, nesting 2048: accepted")
        or diag($r->{body});
    bad(nested($model, 2043, '1'), 'invalid_json', "$model, nesting 2049");
}

# a key is read with its escapes
$r = post($t, '{"mod\\u0065l":"gpt-4o",' . $msgs . '}');
is($r->{status}, 200, 'escaped key: 200');
is($r->{headers}{'x-llm-model'}, 'good', 'escaped key: its route');

$t->done;
