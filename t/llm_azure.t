#!/usr/bin/perl

# An azure-format provider: deployment path, api-version, api-key header.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $KEY = 'azure-key-0123456789abcdef';

$t->write_file('azure.key', "$KEY\n");
my $locations = proxy_location('azure') . proxy_location('az2');
$t->write_conf(<<'EOF' . $locations . "    }\n}\n");
http {
    llm_provider azure format=azure pass=/_llm/azure/
                 key_file=%%TESTDIR%%/azure.key api_version=2024-10-21;
    llm_provider az2 format=azure pass=/_llm/az2/
                 key_file=%%TESTDIR%%/azure.key;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  gpt-4o   azure:gpt4o-prod;
            llm_route  default  az2:dep-default;
            llm_route  emb      azure:emb-deploy;
            llm_route  denied   azure:fault-401;
        }
EOF
$t->run;

my $T = JSON::PP::true;
my %client = ('Authorization' => 'Bearer sk-client-secret');
chat_defaults($t, headers => \%client, text => 'hello azure');

my $r = chat($t, 'gpt-4o');
is($r->{status}, 200, 'status');
is($r->{json}{choices}[0]{message}{content}, 'echo: hello azure', 'content');
is($r->{headers}{'x-llm-provider'}, 'azure', 'x-llm-provider');
is($r->{headers}{'x-llm-model'}, 'gpt4o-prod', 'x-llm-model');

my $q = mock_last($t);
is($q->{path}, '/openai/deployments/gpt4o-prod/chat/completions',
    'deployment path');
is($q->{query}{'api-version'}, '2024-10-21', 'api-version');
is($q->{headers}{'api-key'}, $KEY, 'api-key header');
ok(!exists $q->{headers}{authorization}, 'no Authorization header');
unlike(json_encode($q->{headers}), qr/sk-client-secret/,
    'client key not forwarded');

# default api_version
$r = chat($t, 'default', headers => {});
is($r->{status}, 200, 'default api_version: status');
$q = mock_last($t);
like($q->{query}{'api-version'} // '', qr/^\d{4}-\d\d-\d\d/,
    'default api_version sent');

# stream: Azure sends a first chunk with no choices (prompt filter results)
$r = stream($t, 'gpt-4o');
is($r->{status}, 200, 'stream status');
is($r->{text}, 'echo: hello azure', 'stream text');
ok($r->{done} && $r->{clean}, 'stream: [DONE], clean end');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'stop' }
    @{ $r->{chunks} }), 'stream: finish_reason');
$q = mock_last($t);
is($q->{path}, '/openai/deployments/gpt4o-prod/chat/completions',
    'stream: deployment path');
ok($q->{json}{stream}, 'stream: stream asked');

# stream with usage
$r = stream($t, 'gpt-4o',
    body => { stream_options => { include_usage => $T } });
my @u = grep { ref $_->{usage} } @{ $r->{chunks} };
is(scalar @u, 1, 'stream usage chunk');

# embeddings
$r = post($t, { model => 'emb', input => 'vector please' },
    uri => '/v1/embeddings');
is($r->{status}, 200, 'embeddings status');
is(scalar @{ $r->{json}{data}[0]{embedding} // [] }, 16, 'embedding');
$q = mock_last($t);
is($q->{path}, '/openai/deployments/emb-deploy/embeddings',
    'embeddings path');
is($q->{headers}{'api-key'}, $KEY, 'embeddings api-key');

# a provider error keeps its status, OpenAI-shaped
$r = chat($t, 'denied', headers => {});
is($r->{status}, 401, 'provider 401 passed');
ok(ref $r->{json}{error} && $r->{json}{error}{message},
    'provider 401 OpenAI-shaped') or diag($r->{body});

unlike($t->error_log, qr/\Q$KEY\E/, 'key not in error.log');

$t->done;
