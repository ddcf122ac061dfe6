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

my $p = $t->port(0);
my %h = ('Content-Type' => 'application/json');

sub raw {
    my ($body) = @_;
    return http($t, $p, 'POST', '/v1/chat/completions', \%h, $body);
}

sub bad {
    my ($body, $code, $name) = @_;
    my $r = raw($body);
    is($r->{status}, 400, "$name: 400");
    is(($r->{json} // {})->{error}{code}, $code, "$name: $code");
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
my $r = raw('{"model":"gpt-4o","tools":[{"type":"function","function":'
    . '{"name":"f","parameters":{"type":"object","x":' . ('[' x 100)
    . (']' x 100) . '}}}],' . $msgs . '}');
is($r->{status}, 200, 'nesting 100: accepted') or diag($r->{body});

# escapes in the model name are read as JSON strings
$r = raw('{"model":"gpt\\u002d4o",' . $msgs . '}');
is($r->{status}, 200, 'escaped model name: routed');
is($r->{headers}{'x-llm-model'}, 'good', 'escaped model name: its route');

# a target model that needs escaping is written as a JSON string
mock_reset($t);
$r = raw('{"model":"we\\"ird",' . $msgs . '}');
is($r->{headers}{'x-llm-model'}, 'q"uote', 'quote in names: route found');
my $q = mock_last($t);
is($q->{json}{model}, 'q"uote', 'quote in names: provider got valid JSON');

# catch-all: the body goes out byte for byte
mock_reset($t);
my $body = '{ "model" : "free-model" , "temperature":0.5,'
    . '"messages":[{"role":"user","content":"caf\u00e9 \\u00e9 \\n"}]}';
$r = raw($body);
is($r->{status}, 200, 'catch-all: 200');
$q = mock_last($t);
is($q->{body}, $body, 'catch-all: body unchanged');

# streams: stream_options is added, or replaced when the client sent it
mock_reset($t);
$r = raw('{"stream":true,"model":"gpt-4o",' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: stream_options added');
is($q->{json}{model}, 'good', 'stream: model replaced');
unlike($r->{body}, qr/"choices":\[\]/, 'stream: no usage chunk unasked');
like($r->{body}, qr/data: \[DONE\]\n\n$/, 'stream: [DONE]');

mock_reset($t);
$r = raw('{"model":"gpt-4o","stream_options":{"include_usage":true},'
    . '"stream":true,' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: client stream_options kept');
like($r->{body}, qr/"choices":\[\],"usage":\{"prompt_tokens":\d+/,
    'stream: usage chunk when asked');

mock_reset($t);
$r = raw('{"model":"gpt-4o","stream_options":{"include_usage":false},'
    . '"stream":true,' . $msgs . '}');
$q = mock_last($t);
is_deeply($q->{json}{stream_options}, { include_usage => JSON::PP::true },
    'stream: include_usage false replaced');
unlike($r->{body}, qr/"choices":\[\]/, 'stream: no usage chunk when false');

# an Anthropic target parses the body into a tree when it is more than a
# plain conversation (here: tools); invalid UTF-8 that the scanner lets
# through is refused there
my $tools = '"tools":[{"type":"function","function":{"name":"f",'
    . '"parameters":{"type":"object"}}}]';
$r = raw(qq({"model":"claude",$tools,$msgs}));
is($r->{status}, 200, 'anthropic target: 200');
$r = raw(qq({"model":"claude",$tools,)
    . qq("messages":[{"role":"user","content":"\xff"}]}));
is($r->{status}, 400, 'anthropic target, invalid UTF-8: 400');
is(($r->{json} // {})->{error}{code}, 'invalid_json',
    'anthropic target, invalid UTF-8: invalid_json');

$t->done;
