#!/usr/bin/perl

# The cache (llm_cache, llm_cache_key, docs/caching.md):
#
#  - exact hits, across two workers, with a fresh id; keys by JSON value
#    (member order and white space do not matter, a temperature or a
#    system prompt does); stream and stream_options do not change the key;
#  - a stream served from the cache, with usage when asked; a stream
#    stored and served whole; tool calls replayed, whole and streamed;
#    each provider format;
#  - nothing stored from errors, cut streams or failed attempts;
#  - Cache-Control no-cache and no-store; TTL; reload keeps entries;
#  - semantic hits at the default threshold (the pairs of the builtin
#    embedder's unit test, t/embed/embed_test.c, are run here too), and
#    refusals: another question, an entity swapped, another conversation;
#  - llm_cache_key keeps tenants apart;
#  - a tiny zone: eviction without a crash, budget entries kept.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use File::Basename qw(dirname);
use Test::More;
use Time::HiRes qw(sleep);
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

my $conf = <<'EOF';
worker_processes 2;

http {
    llm_zone       llm 4m;
    llm_zone       tiny 32k;
    llm_route_zone llm;

    llm_provider p format=openai    pass=/_llm/p/;
    llm_provider a format=anthropic pass=/_llm/p/;
    llm_provider g format=gemini    pass=/_llm/p/;

    log_format cache '$http_x_id $llm_cache_status';

    server {
        listen 127.0.0.1:%%PORT_0%%;

        llm_route  m     p:m;
        llm_route  am    a:m;
        llm_route  gm    g:m;
        llm_route  bad   p:fault-500;
        llm_route  cut   p:fault-cut;
        llm_route  e     p:text-embedding-3-small;
        llm_route  pm    p:gpt-4o-mini;

        access_log %%TESTDIR%%/cache.log cache;

        location /v1/ {
            llm_gateway;
            llm_cache llm;
        }

        location /s/v1/ {
            llm_gateway;
            llm_cache llm semantic=0.90;
        }

        location /k/v1/ {
            llm_gateway;
            llm_cache llm semantic=0.90;
            llm_cache_key $http_x_tenant;
        }

        location /ttl/v1/ {
            llm_gateway;
            llm_cache llm ttl=1s;
        }

        location /pe/v1/ {
            llm_gateway;
            llm_cache llm semantic=0.90;
            llm_cache_embed p:text-embedding-3-small;
        }

        location /pef/v1/ {
            llm_gateway;
            llm_cache llm semantic=0.90;
            llm_cache_embed p:fault-500-embed;
        }

        location /lowb/v1/ {
            llm_gateway;
            llm_cache llm;
            llm_budget llm $http_x_team 0.0005 total;
        }

        location /off/v1/ {
            llm_gateway;
        }

        location /tiny/v1/ {
            llm_gateway;
            llm_cache tiny;
            llm_budget tiny $http_x_team 1 day;
        }
EOF
$conf .= proxy_location('p') . "    }\n}\n";
$t->write_conf($conf);
$t->run;

sub status { return $_[0]{headers}{'x-llm-cache'} // '' }
sub asked_n { return scalar @{ LLMGW::mock_requests($t) } }

sub ask {
    my ($where, $what, %o) = @_;
    LLMGW::mock_reset($t);
    my $uri = $where eq '' ? '/v1/chat/completions'
        : "/$where/v1/chat/completions";
    return ref $what eq 'HASH' || $what =~ /^\{/
        ? ($o{stream} ? post($t, $what, uri => $uri, stream => 1, %o)
                      : post($t, $what, uri => $uri, %o))
        : chat($t, $o{model} // 'm', uri => $uri, text => $what, %o);
}

###############################################################################
# exact

my $r = ask('', 'cache me');
is($r->{status}, 200, 'exact: first 200');
is(status($r), 'MISS', 'exact: first MISS');
is(asked_n(), 1, 'exact: first asked the provider');
my $first = $r->{json};

my %seen;
for my $i (1 .. 6) {
    $r = ask('', 'cache me');
    $seen{status($r)}++;
    is($r->{json}{choices}[0]{message}{content},
        $first->{choices}[0]{message}{content}, "exact: hit $i content");
    isnt($r->{json}{id}, $first->{id}, "exact: hit $i fresh id");
    is_deeply($r->{json}{usage}{prompt_tokens}, $first->{usage}{prompt_tokens},
        "exact: hit $i usage");
}
is_deeply(\%seen, { HIT => 6 }, 'exact: six hits, whichever worker');
is(asked_n(), 0, 'exact: the provider not asked');
like($t->read_file('cache.log') // '', qr/ HIT$/m, 'exact: $llm_cache_status');

# keys are JSON values
my $body = '{"model":"m","temperature":0.5,"messages":[{"role":"system",'
    . '"content":"be brief"},{"role":"user","content":"order"}]}';
my $same = "{ \"messages\" : [ {\"content\":\"be brief\", \"role\":\"system\"},"
    . "\n {\"content\": \"order\",\"role\" :\"user\"}],\n\"temperature\":0.5,"
    . " \"model\": \"m\", \"stream\": false, \"user\": \"u1\"}";
is(status(ask('', $body)), 'MISS', 'key: stored');
is(status(ask('', $same)), 'HIT', 'key: reordered, spaced, user: HIT');
(my $other = $body) =~ s/0\.5/0.7/;
is(status(ask('', $other)), 'MISS', 'key: another temperature: MISS');
($other = $body) =~ s/be brief/be long/;
is(status(ask('', $other)), 'MISS', 'key: another system prompt: MISS');
($other = $body) =~ s/"m"/"am"/;
is(status(ask('', $other)), 'MISS', 'key: another model: MISS');

###############################################################################
# streams

$r = ask('', 'cache me', stream => 1);
is(status($r), 'HIT', 'stream: HIT from a whole answer');
ok($r->{done}, 'stream: [DONE]');
is($r->{text}, $first->{choices}[0]{message}{content}, 'stream: the text');
is($r->{chunks}[0]{choices}[0]{delta}{role}, 'assistant', 'stream: role');
my @fin = grep { $_->{choices}[0] && $_->{choices}[0]{finish_reason} }
    @{ $r->{chunks} };
is($fin[0]{choices}[0]{finish_reason}, 'stop', 'stream: finish chunk');
ok(!(grep { $_->{usage} } @{ $r->{chunks} }), 'stream: no usage chunk');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'stream: type');

$r = ask('', 'cache me', stream => 1,
    body => { stream_options => { include_usage => JSON::PP::true } });
my @u = grep { $_->{usage} } @{ $r->{chunks} };
is($u[0]{usage}{prompt_tokens}, $first->{usage}{prompt_tokens},
    'stream: usage chunk when asked');

# a stream stored, served whole and streamed, for each format
for my $model (qw(m am gm)) {
    my $text = "stream first $model __words_120__";
    $r = ask('', $text, model => $model, stream => 1);
    is(status($r), 'MISS', "$model stream: MISS");
    my $streamed = $r->{text};
    $r = ask('', $text, model => $model);
    is(status($r), 'HIT', "$model stream: then whole HIT");
    is($r->{json}{choices}[0]{message}{content}, $streamed,
        "$model stream: the same text");
    $r = ask('', $text, model => $model, stream => 1);
    is(status($r), 'HIT', "$model stream: then stream HIT");
    is($r->{text}, $streamed, "$model stream: the same text streamed");
    ok(@{ $r->{chunks} } > 5, "$model stream: in several chunks");
}

###############################################################################
# tool calls

my $tools = [{ type => 'function', function => { name => 'lookup',
    parameters => { type => 'object', properties => {
        q => { type => 'string' } } } } }];

for my $model (qw(m am)) {
    my $tb = { model => $model, tools => $tools,
        messages => [{ role => 'user', content => "find it $model" }] };
    $r = ask('', $tb);
    is(status($r), 'MISS', "$model tools: MISS");
    my $call = $r->{json}{choices}[0]{message}{tool_calls}[0];
    ok($call && $call->{function}{name} eq 'lookup', "$model tools: a call");
    $r = ask('', $tb);
    is(status($r), 'HIT', "$model tools: HIT");
    my $hit = $r->{json}{choices}[0]{message};
    is_deeply($hit->{tool_calls}, [$call], "$model tools: replayed whole");
    is($r->{json}{choices}[0]{finish_reason}, 'tool_calls',
        "$model tools: finish reason");
    $r = ask('', { %$tb, stream => JSON::PP::true }, stream => 1);
    is(status($r), 'HIT', "$model tools: streamed HIT");
    my ($tc) = map { @{ $_->{choices}[0]{delta}{tool_calls} // [] } }
        grep { $_->{choices}[0] } @{ $r->{chunks} };
    is($tc->{function}{arguments}, $call->{function}{arguments},
        "$model tools: streamed arguments");
    is($tc->{id}, $call->{id}, "$model tools: streamed id");
}

###############################################################################
# what is not stored

$r = ask('', 'failing', model => 'bad');
ok($r->{status} >= 500, "error: $r->{status}");
$r = ask('', 'failing', model => 'bad');
is(asked_n(), 1, 'error: not stored, asked again');
is(status($r), 'MISS', 'error: MISS');

$r = ask('', 'cut short __words_50__', model => 'cut', stream => 1);
ok((grep { ref $_->{error} eq 'HASH' } @{ $r->{chunks} }),
    'cut stream: ended with an error event');
$r = ask('', 'cut short __words_50__', model => 'cut');
is(status($r), 'MISS', 'cut stream: not stored');
is(asked_n(), 1, 'cut stream: asked again');

###############################################################################
# Cache-Control, TTL, reload, embeddings

$r = ask('', 'cache me', headers => { 'Cache-Control' => 'no-cache' });
is(status($r), 'BYPASS', 'no-cache: BYPASS');
is(asked_n(), 1, 'no-cache: asked');

$r = ask('', 'do not keep', headers => { 'Cache-Control' => 'no-store' });
is(status($r), 'MISS', 'no-store: MISS');
$r = ask('', 'do not keep');
is(status($r), 'MISS', 'no-store: not stored');

$r = ask('', 'several', body => { n => 2 });
is(status($r), 'BYPASS', 'n=2: BYPASS');

$r = ask('ttl', 'short lived');
$r = ask('ttl', 'short lived');
is(status($r), 'HIT', 'ttl: HIT');
sleep 1.3;    # ttl=1s, and a margin
$r = ask('ttl', 'short lived');
is(status($r), 'MISS', 'ttl: expired');

$r = ask('off', 'cache me');
ok(!defined $r->{headers}{'x-llm-cache'}, 'no llm_cache: no header');

$r = post($t, { model => 'e', input => 'embed me' }, uri => '/v1/embeddings');
is(status($r), 'MISS', 'embeddings: MISS');
my $emb = $r->{json};
$r = post($t, { model => 'e', input => 'embed me' }, uri => '/v1/embeddings');
is(status($r), 'HIT', 'embeddings: HIT');
is_deeply($r->{json}{data}, $emb->{data}, 'embeddings: the same vectors');

$t->reload;
$r = ask('', 'cache me');
is(status($r), 'HIT', 'reload: entries kept');

###############################################################################
# semantic

my @pairs = (
    ['What is your refund policy?', 'Tell me about refunds'],
    ['How do I reset my password?', 'How can I reset my password'],
    ['Do you ship to Canada?', 'Can you ship to Canada'],
);

for my $p (@pairs) {
    my ($q1, $q2) = @$p;
    is(status(ask('s', $q1)), 'MISS', "semantic: \"$q1\" stored");
    $r = ask('s', $q2);
    is(status($r), 'SEMANTIC', "semantic: \"$q2\" hits it");
    ok($r->{headers}{'x-llm-cache-similarity'} >= 0.9,
        "semantic: similarity $r->{headers}{'x-llm-cache-similarity'}");
    is($r->{json}{choices}[0]{message}{content}, "echo: $q1",
        'semantic: the stored answer');
    is(asked_n(), 0, 'semantic: provider not asked');
}

for my $q ('What is your shipping policy?', 'Do you ship to Mexico?',
    'How do I reset my router?')
{
    is(status(ask('s', $q)), 'MISS', "semantic: \"$q\" refused");
}

ask('s', "What's the weather on Monday?");
is(status(ask('s', "What's the weather on Tuesday?")), 'MISS',
    'semantic: a weekday swapped');
ask('s', 'How much is the iPhone 15?');
is(status(ask('s', 'How much is the iPhone 16?')), 'MISS',
    'semantic: a number swapped');

# the rest of the conversation must be the same
$r = ask('s', { model => 'm', messages => [
    { role => 'system', content => 'You are a pirate.' },
    { role => 'user', content => 'Tell me about refunds' }] });
is(status($r), 'MISS', 'semantic: another system prompt');

$r = ask('s', 'Tell me about refunds', stream => 1);
is(status($r), 'SEMANTIC', 'semantic: streamed');
is($r->{text}, 'echo: What is your refund policy?', 'semantic: stream text');

###############################################################################
# a provider's embeddings (the mock's vectors ignore case and punctuation)

$r = ask('pe', 'Tell me about refunds!');
is(status($r), 'MISS', 'provider embedder: MISS');
my @paths = map { $_->{path} } @{ LLMGW::mock_requests($t) };
is("@paths", '/v1/embeddings /v1/chat/completions',
    'provider embedder: the question embedded, then asked');
$r = ask('pe', 'tell me about refunds');
is(status($r), 'SEMANTIC', 'provider embedder: SEMANTIC');
is($r->{headers}{'x-llm-cache-similarity'}, '1.000',
    'provider embedder: similarity');
is($r->{json}{choices}[0]{message}{content}, 'echo: Tell me about refunds!',
    'provider embedder: the stored answer');
@paths = map { $_->{path} } @{ LLMGW::mock_requests($t) };
is("@paths", '/v1/embeddings', 'provider embedder: only embedded');
is(status(ask('pe', 'How long does delivery take?')), 'MISS',
    'provider embedder: another question');
$r = ask('pe', 'Tell me about refunds!');
is(status($r), 'HIT', 'provider embedder: exact HIT');
is(asked_n(), 0, 'provider embedder: not embedded for an exact hit');
$r = ask('pe', 'tell me about refunds', stream => 1);
is(status($r), 'SEMANTIC', 'provider embedder: streamed');
is($r->{text}, 'echo: Tell me about refunds!', 'provider embedder: text');

$r = ask('pe', 'not read from the cache',
    headers => { 'Cache-Control' => 'no-cache' });
is(status($r), 'BYPASS', 'provider embedder: no-cache');
$r = ask('pe', 'not read from the cache');
is(status($r), 'HIT', 'provider embedder: no-cache stored an exact entry');

$r = ask('pef', 'the embedder fails');
is($r->{status}, 200, 'embedder failure: answered');
is(status($r), 'MISS', 'embedder failure: a miss');
like($t->error_log,
    qr/llm_cache_embed: provider "p" model "fault-500-embed" failed: HTTP 500,/,
    'embedder failure: logged');

###############################################################################
# an answer a budget shortened is not stored

$r = ask('lowb', 'shortened by a budget', model => 'pm',
    headers => { 'X-Team' => 'low' });
is($r->{status}, 200, 'lowered: answered');
$r = ask('lowb', 'shortened by a budget', model => 'pm',
    headers => { 'X-Team' => 'low2' });
is(status($r), 'MISS', 'lowered: not stored');

###############################################################################
# llm_cache_key

$r = ask('k', 'tenant secret', headers => { 'X-Tenant' => 'a' });
is(status($r), 'MISS', 'tenants: a stores');
$r = ask('k', 'tenant secret', headers => { 'X-Tenant' => 'a' });
is(status($r), 'HIT', 'tenants: a hits');
$r = ask('k', 'tenant secret', headers => { 'X-Tenant' => 'b' });
is(status($r), 'MISS', 'tenants: b does not');
$r = ask('k', 'tenant secrets', headers => { 'X-Tenant' => 'c' });
is(status($r), 'MISS', 'tenants: nor semantically');

###############################################################################
# a tiny zone: eviction, budget entries kept

$r = ask('tiny', 'budgeted', headers => { 'X-Team' => 'keep' },
    model => 'pm');
is($r->{status}, 200, 'tiny: budget key made');
my $left = $r->{headers}{'x-llm-budget-remaining'};

my $fails = 0;
for my $i (1 .. 150) {
    $r = ask('tiny', "fill the zone with answer number $i __words_30__");
    $fails++ if $r->{status} != 200;
}
is($fails, 0, 'tiny: every request answered while evicting');
$r = ask('tiny', 'fill the zone with answer number 1 __words_30__');
is(status($r), 'MISS', 'tiny: the oldest entries evicted');
$r = ask('tiny', 'budgeted again', headers => { 'X-Team' => 'keep' },
    model => 'pm');
ok($r->{headers}{'x-llm-budget-remaining'} < $left,
    'tiny: the budget entry kept what it spent');

###############################################################################
# the builtin embedder's own pairs (C unit test)

SKIP: {
    my $src = $ENV{NGINX_SRC} // dirname($t->module) . '/nginx-src';
    my $cc = $ENV{CC} // 'cc';
    my $mod = "$FindBin::Bin/../ngx_http_llm_gateway_module";
    my $bin = $t->testdir . '/embed_test';

    skip "no configured nginx tree at $src (./build.sh)", 1
        unless -f "$src/objs/ngx_auto_config.h";

    my $inc = join ' ', map { "-I'$_'" } "$src/src/core", "$src/src/event",
        "$src/src/event/modules", "$src/src/os/unix", "$src/objs", $mod;
    my $out = `$cc -g -O1 -Wall -Werror $inc -o '$bin' \\
        '$FindBin::Bin/embed/embed_test.c' '$mod/ngx_http_llm_embed.c' 2>&1`;
    is($?, 0, 'embed unit test: compiled') or diag($out), skip 'no', 1;

    $out = `'$bin' 2>&1`;
    for my $l (split /\n/, $out) {
        if ($l =~ /^(not )?ok - (.*)$/) {
            ok(!$1, "embed: $2");
        }
    }
    like($out, qr/^done$/m, 'embed unit test: ran to its end');
}

$t->done;
