#!/usr/bin/perl

# llm_max_response_size: answers and stream events over the limit are
# refused, not buffered without bound.

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
            llm_max_response_size 1k;
            llm_route  gpt-4o   openai:good;
            llm_route  claude   anthropic:claude-good;
        }
EOF
    . proxy_location('openai')
    . "    }\n}\n");
$t->run;

# small answers pass
my $r = chat($t, 'gpt-4o', text => 'hi');
is($r->{status}, 200, 'small answer: 200');
$r = chat($t, 'claude', text => 'hi', stream => 1);
is($r->{status}, 200, 'small stream: 200');
like($r->{body} // '', qr/data: \[DONE\]/, 'small stream: [DONE]');

# an answer over the limit: 502 invalid_response
$r = chat($t, 'gpt-4o', text => 'x' x 3000);
is($r->{status}, 502, 'large answer: 502');
is(($r->{json} // {})->{error}{code}, 'invalid_response',
    'large answer: invalid_response');

# a stream whose one event is over the limit ends with an error
for my $model ('gpt-4o', 'claude') {
    $r = chat($t, $model, text => 'y' x 3000, stream => 1);
    my $body = $r->{body} // '';
    ok($r->{status} == 502 || $body =~ /"error"/,
        "$model: large stream event: an error") or diag($body);
    unlike($body, qr/y{2000}/, "$model: large event not relayed");
}

like($t->error_log, qr/longer than llm_max_response_size/,
    'the reason is logged');

$t->done;
