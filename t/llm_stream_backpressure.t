#!/usr/bin/perl

# A slow reader of a long stream: the gateway reads the provider no faster
# than the client reads the translated stream, so the worker's memory
# stays within a few buffers of plain proxy_pass, and the stream still
# arrives whole.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

my $t = LLMGW->new;
my $mock = $t->run_mock;

$t->write_conf(<<'EOF'
http {
    llm_provider openai format=openai pass=/_llm/openai/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  huge  openai:fault-huge;
        }

        location /plain/ {
            proxy_pass http://127.0.0.1:%%MOCK%%/v1/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
EOF
    . proxy_location('openai')
    . "    }\n}\n");
$t->run;

my $p = $t->port(0);

sub worker_rss {
    my ($w) = LLMGW::_children($t->_pid);
    open my $fh, '<', "/proc/$w/status" or return 0;
    local $/;
    my ($kb) = <$fh> =~ /^VmRSS:\s+(\d+)/m;
    return $kb // 0;
}

# a request whose reader takes 64 KB, pauses for $pause seconds, then
# reads the rest; returns (RSS growth in KB during the pause, body bytes,
# the body's end)
sub slow_read {
    my ($uri, $model, $pause) = @_;

    my $body = json_encode({ model => $model, stream => JSON::PP::true,
        messages => [{ role => 'user', content => 'hi' }] });

    my $before = worker_rss();

    my $s = IO::Socket::INET->new(Proto => 'tcp') or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536);
    $s->connect(Socket::pack_sockaddr_in($p, Socket::inet_aton('127.0.0.1')))
        or die "connect: $!";
    $s->autoflush(1);
    print $s "POST $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nConnection: close\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";

    my $sel = IO::Select->new($s);
    my ($got, $tail) = (0, '');
    my $read = sub {
        my ($limit, $deadline) = @_;
        while ($got < $limit && time < $deadline) {
            last unless $sel->can_read($deadline - time);
            my $n = sysread($s, my $buf, 65536);
            last unless $n;
            $got += $n;
            $tail = substr($tail . $buf, -200);
        }
    };

    $read->(65536, time + 10);

    my $peak = 0;
    my $end = time + $pause;
    while (time < $end) {
        sleep 0.25;
        my $rss = worker_rss();
        $peak = $rss if $rss > $peak;
    }

    $read->(1e12, time + 60);
    close $s;

    return ($peak - $before, $got, $tail);
}

# warm up both paths (first-use allocations are not the stream's)
slow_read('/plain/chat/completions', 'fault-huge', 0);
slow_read('/v1/chat/completions', 'huge', 0);

my ($plain, $plain_bytes) = slow_read('/plain/chat/completions',
    'fault-huge', 3);
my ($gw, $gw_bytes, $gw_tail) = slow_read('/v1/chat/completions', 'huge', 3);

diag("RSS growth while the reader paused: proxy_pass ${plain} KB, "
    . "gateway ${gw} KB");

cmp_ok($plain_bytes, '>', 50_000_000, 'proxy_pass: the whole stream');
cmp_ok($gw_bytes, '>', 50_000_000, 'gateway: the whole stream');
like($gw_tail, qr/data: \[DONE\]\n\n\r\n0\r\n\r\n$/,
    'gateway: the stream ends with [DONE]');
cmp_ok($gw, '<', $plain + 8192,
    'gateway: memory within a few buffers of proxy_pass');

$t->done;
