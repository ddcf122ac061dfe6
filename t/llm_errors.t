#!/usr/bin/perl

# Errors made by the gateway: OpenAI-shaped JSON with the documented
# status, type, code and param.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;
use IO::Socket::INET;
use IO::Select;
use POSIX ();

my $t = LLMGW->new;
my $mock = $t->run_mock;
my $dead = $t->port('dead');     # nothing listens there

$t->write_file('key', "sk-errors-test\n");
$t->write_conf(<<'EOF'
http {
    llm_provider openai format=openai pass=/_llm/openai/
                 key_file=%%TESTDIR%%/key;
    llm_provider dead format=openai pass=/_llm/dead/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            client_max_body_size 16k;
            llm_route  ok         openai:good;
            llm_route  garbage    openai:fault-garbage;
            llm_route  html       openai:fault-html;
            llm_route  truncated  openai:fault-truncated;
            llm_route  reset      openai:fault-reset;
            llm_route  hang       openai:fault-hang;
            llm_route  drop       openai:fault-drop;
            llm_route  drip       openai:fault-drip;
            llm_route  e500       openai:fault-500;
            llm_route  e401       openai:fault-401;
            llm_route  e429       openai:fault-429;
            llm_route  unreachable  dead:model;
        }
EOF
    . proxy_location('openai', extra => 'proxy_read_timeout 1s;')
    . proxy_location('dead', port => $dead)
    . "    }\n}\n");
$t->run;

my $p = $t->port(0);
my $T = JSON::PP::true;
my $msgs = [{ role => 'user', content => 'hi' }];

my $chat = '/v1/chat/completions';
my $ire = 'invalid_request_error';

###############################################################################
# client errors

error_is(post($t, '{"model": "ok", "messages": [}'), 400, $ire,
    'invalid_json', '*', 'invalid JSON');
error_is(post($t, ''), 400, $ire, '*', '*', 'empty body');
error_is(post($t, '[1, 2]'), 400, $ire, '*', '*', 'array body');
error_is(post($t, '"text"'), 400, $ire, '*', '*', 'string body');
error_is(post($t, { messages => $msgs }), 400, $ire, '*', 'model',
    'missing model');
error_is(post($t, { model => 5, messages => $msgs }), 400, $ire, '*',
    'model', 'model not a string');
error_is(post($t, { model => 'ok' }), 400, $ire,
    'missing_required_parameter', 'messages', 'missing messages');
error_is(post($t, { model => 'ok', messages => 'hi' }), 400, $ire,
    'invalid_type', 'messages', 'messages not an array');
error_is(post($t, { model => 'ok' }, uri => '/v1/embeddings'), 400, $ire,
    '*', '*', 'embeddings without input');

error_is(chat($t, 'no-such-model'), 404, $ire, 'model_not_found', '*',
    'unknown model');
error_is(post($t, { model => 'no-such-model', input => 'x' },
    uri => '/v1/embeddings'), 404, $ire, 'model_not_found', '*',
    'unknown embeddings model');
error_is(post($t, { model => 'ok', prompt => 'x' },
    uri => '/v1/completions'), 404, $ire, 'unknown_url', '*',
    'unknown path');
error_is(http($t, $p, 'GET', '/v1/nothing/here'), 404, $ire, 'unknown_url',
    '*', 'unknown GET path');
error_is(http($t, $p, 'GET', $chat), 405, $ire, 'method_not_allowed', '*',
    'GET chat/completions');
error_is(post($t, {}, uri => '/v1/models'), 405, $ire, 'method_not_allowed',
    '*', 'POST models');
error_is(http($t, $p, 'DELETE', '/v1/embeddings'), 405, $ire,
    'method_not_allowed', '*', 'DELETE embeddings');
is(http($t, $p, 'GET', $chat)->{headers}{allow}, 'POST',
    'GET chat/completions: Allow');
is(post($t, {}, uri => '/v1/models')->{headers}{allow}, 'GET, HEAD',
    'POST models: Allow');

my $big = { model => 'ok', messages => [{ role => 'user',
    content => 'x' x 40000 }] };
error_is(post($t, $big), 413, $ire, 'request_too_large', '*',
    'body over client_max_body_size');

is(scalar @{ mock_requests($t) }, 0, 'no client error reached the provider');

###############################################################################
# provider failures

error_is(chat($t, 'garbage'), 502, 'api_error', 'invalid_response', '*',
    'provider garbage');
error_is(chat($t, 'html'), 502, 'api_error', 'invalid_response', '*',
    'provider HTML page');
error_is(chat($t, 'truncated'), 502, 'api_error', 'invalid_response', '*',
    'provider truncated JSON');
error_is(chat($t, 'reset'), 502, undef, 'provider_error', '*',
    'provider connection reset');
error_is(chat($t, 'unreachable'), 502, undef, 'provider_error', '*',
    'provider unreachable');

my $start = time;
error_is(chat($t, 'hang'), 504, undef, 'provider_timeout', '*',
    'provider timeout');
ok(time - $start < 6, 'timeout came from proxy_read_timeout 1s');

error_is(chat($t, 'drop'), 502, undef, '*', '*',
    'provider dropped a JSON answer');

# provider errors keep their status, OpenAI-shaped
error_is(chat($t, 'e500'), 500, undef, '*', '*', 'provider 500');
error_is(chat($t, 'e401'), 401, undef, '*', '*', 'provider 401');
error_is(chat($t, 'e429'), 429, undef, '*', '*', 'provider 429');

# failures of a streamed request before the first byte: a JSON error
my $r = stream($t, 'garbage');
ok($r->{status} == 502 || ($r->{status} == 200 && $r->{done}
    && (grep { ref $_->{error} } @{ $r->{chunks} })),
    'stream from a garbage provider: 502 or an error event')
    or diag(substr($r->{raw}, 0, 600));

$r = stream($t, 'e500');
is($r->{status}, 500, 'stream, provider 500 before any byte: 500');
is(ref $r->{json}{error}, 'HASH', 'stream, provider 500: JSON error');

# the provider drops the connection in the middle of a stream
$r = stream($t, 'drop');
is($r->{status}, 200, 'dropped stream: 200 (already started)');
like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
    'dropped stream: event-stream');
ok($r->{done}, 'dropped stream: ends with data: [DONE]')
    or diag($r->{body});
my @d = grep { $_ ne '[DONE]' } @{ $r->{data} };
my $last = json_decode($d[-1] // '');
ok(ref $last eq 'HASH' && ref $last->{error} eq 'HASH'
    && $last->{error}{message}, 'dropped stream: error event before [DONE]')
    or diag($r->{body});
ok($r->{clean}, 'dropped stream: clean chunked end');
ok(!$r->{timed_out}, 'dropped stream: no hang');
ok((grep { ($_->{choices}[0]{delta}{role} // '') eq 'assistant' }
    @{ $r->{chunks} }), 'dropped stream: the events before the drop came');

###############################################################################
# the client goes away: in the middle of a stream, while the provider is
# still thinking (stream and not), and while a body is being sent

my $logged = log_lines($t, 'access.log');

for my $case (['drip', 1, 'stream'], ['hang', 1, 'provider'],
    ['hang', 0, 'provider'], ['ok', 0, 'body'])
{
    my ($model, $stream, $when) = @$case;
    my $b = json_encode({ model => $model, messages => $msgs,
        $stream ? (stream => $T) : () });
    mock_reset($t);
    my $s = IO::Socket::INET->new("127.0.0.1:$p") or die "connect: $!";
    if ($when eq 'body') {
        # half a body; nothing to wait for: a pause so that nginx reads
        # the part sent before it sees the close
        print $s "POST $chat HTTP/1.1\r\nHost: x\r\n"
            . "Content-Length: " . (length($b) + 100) . "\r\n\r\n$b";
        select undef, undef, undef, 0.1;
        close $s;
        next;
    }
    print $s "POST $chat HTTP/1.1\r\nHost: x\r\n"
        . "Content-Length: " . length($b) . "\r\n\r\n$b";
    my $name = "client gone: $model" . ($stream ? ', stream' : '');
    if ($when eq 'stream') {
        my ($got, $sel) = ('', IO::Select->new($s));
        ok((wait_until {
                sysread($s, $got, 4096, length $got) if $sel->can_read(0);
                $got =~ /\r\n\r\n.*data: /s;
            }), "$name: closed after the first event");
    } else {
        ok((wait_until { @{ mock_requests($t) } >= 1 }),
            "$name: closed while the provider has the request");
    }
    close $s;
}

# the gateway has ended all four requests (each logs its line)
ok((wait_until { log_lines($t, 'access.log') >= $logged + 4 }),
    'client gone: the four requests ended');

$r = chat($t, 'ok');
is($r->{status}, 200, 'serving after clients went away');

# a reload with a stream in flight (at the provider): the stream finishes
mock_reset($t);
my $pid = fork // die;
if ($pid == 0) {
    my $r = stream($t, 'drip');
    POSIX::_exit($r->{done} && $r->{clean} && $r->{text} eq 'echo: hi'
        ? 0 : 1);
}
ok((wait_until { @{ mock_requests($t) } >= 1 }),
    'reload: the stream has reached the provider');
ok($t->reload, 'reload');
waitpid $pid, 0;
is($?, 0, 'stream in flight during reload completed');

# the gateway still works
$r = chat($t, 'ok');
is($r->{status}, 200, 'still serving');

$t->done;
