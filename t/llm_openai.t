#!/usr/bin/perl

# An openai-format provider: chat (plain and streamed), embeddings,
# models, the provider's key and headers, big request bodies, variables
# in access_log, the key kept out of the logs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;
use IO::Socket::INET;
use POSIX ();

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $KEY = 'sk-openai-test-KEY-0123456789';

$t->write_file('openai.key', "$KEY\n");
$t->write_conf(<<'EOF' . proxy_location('openai') . "    }\n}\n");
http {
    llm_provider openai format=openai pass=/_llm/openai/
                 key_file=%%TESTDIR%%/openai.key;

    log_format llm 'LLM status=$status provider=$llm_provider '
                   'model=$llm_model prompt=$llm_prompt_tokens '
                   'completion=$llm_completion_tokens ttft=$llm_ttft '
                   'attempts=$llm_attempts auth="$http_authorization"';

    server {
        listen 127.0.0.1:%%PORT_0%%;
        client_body_buffer_size 1k;
        client_max_body_size 1m;

        location /v1/ {
            llm_gateway;
            llm_route  gpt-4o  openai:gpt-4o-2024-08-06;
            llm_route  text-embedding-3-small  openai;
            llm_route  drip  openai:fault-drip;
            llm_route  slow  openai:fault-slow;
            access_log %%TESTDIR%%/llm.log llm;
        }
EOF
$t->run;

my $p = $t->port(0);
my %client = (
    'Authorization' => 'Bearer sk-client-secret',
    'Cookie'        => 'session=client-cookie',
);
my $T = JSON::PP::true;
chat_defaults($t, headers => \%client);

###############################################################################
# non-stream chat

my $r = chat($t, { model => 'gpt-4o', temperature => 0.2,
    messages => [{ role => 'system', content => 'Be brief.' },
                 { role => 'user', content => 'hello gateway' }] });

is($r->{status}, 200, 'chat status');
like($r->{headers}{'content-type'}, qr{^application/json}, 'chat type');
is($r->{json}{object}, 'chat.completion', 'chat object');
is($r->{json}{choices}[0]{message}{role}, 'assistant', 'chat role');
is($r->{json}{choices}[0]{message}{content}, 'echo: hello gateway',
    'chat content');
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'chat finish_reason');
is($r->{json}{usage}{total_tokens}, $r->{json}{usage}{prompt_tokens}
    + $r->{json}{usage}{completion_tokens}, 'chat usage');
is($r->{headers}{'x-llm-provider'}, 'openai', 'x-llm-provider');
is($r->{headers}{'x-llm-model'}, 'gpt-4o-2024-08-06', 'x-llm-model');
is($r->{headers}{'x-llm-attempts'}, '1', 'x-llm-attempts');

my $q = mock_last($t);
is($q->{method}, 'POST', 'provider: POST');
is($q->{path}, '/v1/chat/completions', 'provider: path');
is($q->{json}{model}, 'gpt-4o-2024-08-06', 'provider: mapped model');
is($q->{headers}{authorization}, "Bearer $KEY", 'provider: our key');
ok(!exists $q->{headers}{cookie}, 'provider: no client Cookie');
unlike(join(' ', values %{ $q->{headers} }), qr/sk-client-secret/,
    'provider: no client Authorization anywhere');
like($q->{headers}{'content-type'} // '', qr{^application/json},
    'provider: content-type');
is($q->{json}{temperature}, 0.2, 'provider: temperature passed');
is($q->{json}{messages}[0]{content}, 'Be brief.', 'provider: messages');

###############################################################################
# stream without usage

$r = stream($t, { model => 'gpt-4o',
    messages => [{ role => 'user', content => 'stream me now please' }] });

is($r->{status}, 200, 'stream status');
like($r->{headers}{'content-type'}, qr{^text/event-stream},
    'stream content-type');
is($r->{headers}{'x-llm-provider'}, 'openai', 'stream x-llm-provider');
is($r->{text}, 'echo: stream me now please', 'stream text');
ok($r->{done}, 'stream ends with data: [DONE]');
ok($r->{clean}, 'stream: clean chunked end');
is(scalar(grep { $_ eq '[DONE]' } @{ $r->{data} }), 1, 'one [DONE]');
is($r->{chunks}[0]{choices}[0]{delta}{role}, 'assistant',
    'stream: first delta has the role');
ok(!(grep { !@{ $_->{choices} // [] } } @{ $r->{chunks} }),
    'stream: no usage chunk unless asked');
ok(!(grep { ref $_->{usage} } @{ $r->{chunks} }),
    'stream: no usage numbers unless asked');
ok((grep { ($_->{choices}[0]{finish_reason} // '') eq 'stop' }
    @{ $r->{chunks} }), 'stream: finish_reason stop');
ok(!(grep { ($_->{object} // '') ne 'chat.completion.chunk' }
    @{ $r->{chunks} }), 'stream: every chunk is a chat.completion.chunk');

###############################################################################
# stream with include_usage

$r = stream($t, { model => 'gpt-4o',
    stream_options => { include_usage => $T },
    messages => [{ role => 'user', content => 'count tokens' }] });

is($r->{text}, 'echo: count tokens', 'usage stream text');
my @u = grep { ref $_->{usage} } @{ $r->{chunks} };
is(scalar @u, 1, 'usage stream: one usage chunk');
is_deeply($u[0]{choices}, [], 'usage chunk: choices []') if @u;
ok(@u && $u[0]{usage}{prompt_tokens} > 0
    && $u[0]{usage}{completion_tokens} == 3, 'usage chunk: numbers')
    or diag(json_encode(\@u));
is(ref $r->{chunks}[-1]{usage}, 'HASH', 'usage chunk is the last one');
ok($r->{done} && $r->{clean}, 'usage stream: [DONE], clean end');

###############################################################################
# embeddings

$r = post($t, { model => 'text-embedding-3-small',
    input => ['one', 'two words'] }, uri => '/v1/embeddings');
is($r->{status}, 200, 'embeddings status');
is($r->{json}{object}, 'list', 'embeddings object');
is(scalar @{ $r->{json}{data} // [] }, 2, 'embeddings: two vectors');
is(scalar @{ $r->{json}{data}[1]{embedding} // [] }, 16,
    'embeddings: vector');
is($r->{json}{data}[1]{index}, 1, 'embeddings: index');
ok($r->{json}{usage}{prompt_tokens} > 0, 'embeddings: usage');
$q = mock_last($t);
is($q->{path}, '/v1/embeddings', 'embeddings: provider path');
is($q->{json}{model}, 'text-embedding-3-small', 'embeddings: model kept');
is_deeply($q->{json}{input}, ['one', 'two words'], 'embeddings: input');
is($q->{headers}{authorization}, "Bearer $KEY", 'embeddings: our key');

$r = post($t, { model => 'text-embedding-3-small', input => 'x',
    encoding_format => 'base64' }, uri => '/v1/embeddings');
ok(defined $r->{json}{data}[0]{embedding}
    && !ref $r->{json}{data}[0]{embedding},
    'embeddings: base64 passed through');

###############################################################################
# models

$r = http($t, $p, 'GET', '/v1/models', \%client);
is($r->{status}, 200, 'models status');
is($r->{json}{object}, 'list', 'models object');
my @ids = sort map { $_->{id} } @{ $r->{json}{data} // [] };
is_deeply(\@ids, ['drip', 'gpt-4o', 'slow', 'text-embedding-3-small'],
    'models: routes');
is($r->{json}{data}[0]{object}, 'model', 'models: object model');
is($r->{json}{data}[0]{owned_by}, 'llm-gateway', 'models: owned_by');

###############################################################################
# a body larger than client_body_buffer_size (buffered to a temp file)

my $big = 'word ' x 20000;    # 100 KB
$big =~ s/ $//;
$r = chat($t, { model => 'gpt-4o',
    messages => [{ role => 'user', content => $big }] });
is($r->{status}, 200, 'big body status');
is($r->{json}{choices}[0]{message}{content}, "echo: $big",
    'big body echoed whole');
$q = mock_last($t);
is(length($q->{json}{messages}[0]{content} // ''), length $big,
    'big body reached the provider');
like($t->error_log, qr/client request body is buffered to a temporary file/,
    'the body went through a temp file');

# streamed too
$r = stream($t, { model => 'gpt-4o',
    messages => [{ role => 'user', content => $big }] });
is($r->{text}, "echo: $big", 'big body stream');

###############################################################################
# a provider stream arriving one byte at a time, several at once

my @kids;
for my $i (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $r = stream($t, 'drip', text => "drip number $i",
            headers => {});
        POSIX::_exit(($r->{text} eq "echo: drip number $i" && $r->{done}
            && $r->{clean}) ? 0 : 1);
    }
    push @kids, $pid;
}
$r = stream($t, 'drip', text => 'drip main', headers => {});
is($r->{text}, 'echo: drip main', 'drip stream text');
ok($r->{done} && $r->{clean}, 'drip stream: [DONE], clean');
is(scalar(grep { $_->{choices}[0]{delta}{role} } @{ $r->{chunks} }), 1,
    'drip stream: one role delta');
my $bad = 0;
for my $k (@kids) {
    waitpid $k, 0;
    $bad++ if $? != 0;
}
is($bad, 0, 'four concurrent drip streams, each its own answer');

$r = chat($t, { model => 'drip',
    messages => [{ role => 'user', content => 'drip json' }] });
is($r->{json}{choices}[0]{message}{content}, 'echo: drip json',
    'drip non-stream');

###############################################################################
# keepalive: two pipelined requests on one connection

{
    my $b1 = json_encode({ model => 'gpt-4o',
        messages => [{ role => 'user', content => 'first' }] });
    my $b2 = json_encode({ model => 'gpt-4o',
        messages => [{ role => 'user', content => 'second' }] });
    my $req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($b1) . "\r\n\r\n$b1"
        . "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($b2) . "\r\n\r\n$b2";
    my $s = IO::Socket::INET->new("127.0.0.1:$p") or die;
    print $s $req;
    local $/;
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 10;
    my $all = eval { <$s> } // '';
    alarm 0;
    my @st = $all =~ m{HTTP/1\.1 (\d{3}) }g;
    is("@st", '200 200', 'keepalive: two answers');
    like($all, qr/echo: first.*echo: second/s, 'keepalive: in order');
}

###############################################################################
# variables in access_log

my $log = $t->wait_for_file('llm.log', qr/(?:LLM.*\n){8}/);
my @lines = grep { /model=gpt-4o-2024-08-06/ } split /\n/, $log // '';
ok(@lines >= 4, 'access_log lines with $llm_model') or diag($log);
my ($l) = grep { /status=200/ } @lines;
like($l // '', qr/provider=openai /, '$llm_provider');
like($l // '', qr/prompt=[1-9]\d* completion=[1-9]\d* /,
    '$llm_prompt_tokens $llm_completion_tokens');
like($l // '', qr/ttft=\d+ /, '$llm_ttft');
like($l // '', qr/attempts=openai:gpt-4o-2024-08-06 200 \d+ms /,
    '$llm_attempts lists the attempt');

# $llm_ttft of a provider that answers after 3 s
$r = chat($t, { model => 'slow',
    messages => [{ role => 'user', content => 'take your time' }] });
is($r->{status}, 200, 'slow provider: status');
$log = $t->wait_for_file('llm.log', qr/model=fault-slow /);
my ($sl) = grep { /model=fault-slow / } split /\n/, $log // '';
my ($ttft) = ($sl // '') =~ /ttft=(\d+)/;
ok(defined $ttft && $ttft >= 2900 && $ttft < 10000,
    '$llm_ttft measures the provider wait') or diag($sl);

# streamed usage is known too, even when the client did not ask for it
# (DESIGN.md: the gateway asks the provider and strips the extra chunk);
# "echo: stream me now please" is the only 5-word answer
like($log // '', qr/model=gpt-4o-2024-08-06 prompt=[1-9]\d* completion=5 /,
    'usage of a stream without include_usage in the log');

###############################################################################
# the key stays out of the logs

for my $f (qw(error.log access.log llm.log)) {
    unlike($t->read_file($f) // '', qr/\Q$KEY\E/, "key not in $f");
}

# and the gateway does not need the client's key at all
$r = chat($t, 'gpt-4o', text => 'anon', headers => {});
is($r->{status}, 200, 'no client Authorization needed');

$t->done;
