#!/usr/bin/perl

# The official OpenAI SDK for Node against the gateway, for a route of each
# provider format (t/sdk/run.mjs does the calls).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $sdk = "$FindBin::Bin/sdk";

if (system('node -e 0 >/dev/null 2>&1') != 0) {
    plan(skip_all => 'node not found');
}

# openai 6.x wants Node 20; Debian 12's own nodejs is 18, which the 4.x
# line of the SDK supports (same calls)
my $major = `node -p 'process.versions.node.split(".")[0]'`;
chomp $major;

if ($major < 20) {
    $sdk = "$sdk/node18";
    system("cp '$FindBin::Bin/sdk/run.mjs' '$FindBin::Bin/sdk/refused.mjs' "
        . "'$sdk/'") == 0
        or BAIL_OUT('cannot copy run.mjs and refused.mjs');
}

if (!-d "$sdk/node_modules/openai") {
    my $out = `cd '$sdk' && npm install --no-audit --no-fund 2>&1`;
    if ($? != 0 || !-d "$sdk/node_modules/openai") {
        # the suite must not pass silently without the SDK run
        fail('npm install in t/sdk');
        diag($out);
        done_testing();
        exit;
    }
}

my $mock = $t->run_mock;
$t->write_file('key', "sk-sdk-provider-key\n");

my $locations = join '', map { proxy_location($_) }
    qw(openai azure anthropic gemini);
$t->write_conf(<<'EOF' . $locations . "    }\n}\n");
http {
    llm_zone     llm 1m;

    log_format   cached '$llm_cache_status';

    llm_provider openai    format=openai    pass=/_llm/openai/
                           key_file=%%TESTDIR%%/key;
    llm_provider azure     format=azure     pass=/_llm/azure/
                           key_file=%%TESTDIR%%/key api_version=2024-10-21;
    llm_provider anthropic format=anthropic pass=/_llm/anthropic/
                           key_file=%%TESTDIR%%/key;
    llm_provider gemini    format=gemini    pass=/_llm/gemini/
                           key_file=%%TESTDIR%%/key;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  sdk-openai     openai:gpt-4o;
            llm_route  sdk-azure      azure:gpt4o-deploy;
            llm_route  sdk-anthropic  anthropic:claude-sonnet-4-5;
            llm_route  sdk-gemini     gemini:gemini-2.0-flash;
            llm_route  emb-openai     openai:text-embedding-3-small;
            llm_route  emb-azure      azure:emb-deploy;
            llm_route  emb-gemini     gemini:text-embedding-004;
        }

        # the same, from the cache the second time
        location /cached/v1/ {
            llm_gateway;
            llm_route  sdk-openai     openai:gpt-4o;
            llm_route  sdk-anthropic  anthropic:claude-sonnet-4-5;
            llm_route  emb-openai     openai:text-embedding-3-small;
            llm_cache  llm;
            access_log %%TESTDIR%%/cached.log cached;
        }

        # a budget that cannot pay for any answer: 402
        location /poor/v1/ {
            llm_gateway;
            llm_route  sdk-openai  openai:gpt-4o;
            llm_budget llm all 0.000001 total;
            access_log %%TESTDIR%%/poor.log;
        }
EOF
$t->run;

my $base = 'http://127.0.0.1:' . $t->port(0) . '/v1';

my @runs = (
    ['openai',    'sdk-openai',    'emb-openai'],
    ['azure',     'sdk-azure',     'emb-azure'],
    ['anthropic', 'sdk-anthropic', '-'],
    ['gemini',    'sdk-gemini',    'emb-gemini'],
);

for my $run (@runs) {
    my ($format, $model, $emb) = @$run;
    my ($rc, $plan, $seen) = sdk_run($sdk, $format, $base, $model, $emb);
    ok($rc == 0 && defined $plan && $plan == $seen,
        "$format: run.mjs ran every check") or diag("exit $rc");
}

# the cache: a second run is answered from it, streams included, and the
# SDK sees no difference

for my $run (['openai', 'sdk-openai', 'emb-openai'],
    ['anthropic', 'sdk-anthropic', '-'])
{
    my ($format, $model, $emb) = @$run;
    my $cbase = $base =~ s{/v1$}{/cached/v1}r;

    for my $pass (1, 2) {
        my $before = () = log_lines($t, 'cached.log');
        my ($rc, $plan, $seen) = sdk_run($sdk, "cached $format $pass",
            $cbase, $model, $emb);
        ok($rc == 0 && defined $plan && $plan == $seen,
            "cached $format $pass: run.mjs ran every check");

        next if $pass == 1;

        my @all = log_lines($t, 'cached.log');
        my @l = @all[$before .. $#all];
        my $hits = grep { $_ eq 'HIT' } @l;
        ok($hits >= 5, "cached $format: the second run hit the cache "
            . "($hits of " . scalar(@l) . ')');
    }
}

# the SDK does not retry a 402, and the provider is never asked

LLMGW::mock_reset($t);
my ($rc, $plan, $seen) = sdk_run("$sdk/refused.mjs", 'budget', $base =~ s{/v1$}{/poor/v1}r,
    'sdk-openai');
ok($rc == 0 && defined $plan && $plan == $seen,
    'budget: refused.mjs ran every check') or diag("exit $rc");
is(scalar(log_lines($t, 'poor.log')), 2,
    'budget: one request each (the SDK did not retry)');
is(scalar @{ LLMGW::mock_requests($t) }, 0, 'budget: provider not asked');

$t->done;
