#!/usr/bin/perl

# llm_status (docs/observability.md): after known traffic, over two
# workers and a reload, the JSON and Prometheus numbers are what was sent;
# promtool accepts the text and a real Prometheus scrapes it; the HTML
# page loads in headless Chromium with no console error (a screenshot is
# kept); allow/deny applies; the series cap holds.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

$t->write_conf(<<'EOF' . proxy_location('p') . "    }\n}\n");
worker_processes 2;

http {
    llm_zone              llm 2m;
    llm_status_max_series 6;

    llm_provider p format=openai pass=/_llm/p/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        llm_route m   p:gpt-4o-mini;
        llm_route fb  p:fault-500-st p:gpt-4o-mini backup;
        llm_route *   p;

        location /v1/ {
            llm_gateway;
            llm_cache  llm;
            llm_budget llm $http_x_team 5 month;
        }

        location = /llm_status {
            llm_status;
            allow 127.0.0.1;
            deny all;
        }

        location = /denied {
            llm_status;
            deny all;
        }
EOF
$t->run;

sub status_json {
    my $r = LLMGW::http($t, $t->port(0), 'GET', '/llm_status', {}, undef);
    return $r->{json};
}

sub series {
    my ($j, $route) = @_;
    my ($s) = grep { $_->{route} eq $route } @{ $j->{series} // [] };
    return $s // {};
}

###############################################################################
# known traffic

my ($prompt, $completion, $cost) = (0, 0, 0);
for my $i (1 .. 6) {
    my $r = chat($t, 'm', text => "status $i", headers => { 'X-Team' => 'st' });
    is($r->{status}, 200, "traffic $i");
    $prompt += $r->{json}{usage}{prompt_tokens};
    $completion += $r->{json}{usage}{completion_tokens};
    $cost += $r->{headers}{'x-llm-cost'};
}
chat($t, 'm', text => 'status 1', headers => { 'X-Team' => 'st' });  # a hit
for my $i (1 .. 2) {
    chat($t, 'fb', text => "fallback $i");
}

my $j = status_json();
my $m = series($j, 'm');
is($m->{requests}{'2xx'}, 7, 'json: requests of m');
is($m->{tokens}{prompt}, $prompt, 'json: prompt tokens');
is($m->{tokens}{completion}, $completion, 'json: completion tokens');
ok(abs($m->{cost_usd} - $cost) < 1e-5, "json: cost $m->{cost_usd}");
is(series($j, 'fb')->{fallbacks}, 1, 'json: fallbacks (the second skips the failed target)');
my ($z) = grep { $_->{name} eq 'llm' } @{ $j->{zones} };
is($z->{cache}{hits}, 1, 'json: cache hits');
ok($z->{cache}{misses} >= 6, 'json: cache misses');
my ($b) = grep { $_->{key} eq 'st' } @{ $j->{budgets} };
ok($b && abs($b->{spent_usd} - $cost) < 1e-5, 'json: budget spent');
is($b->{limit_usd}, 5, 'json: budget limit');
ok((grep { $_->{target} =~ /fault-500-st/ && $_->{failures} >= 1 }
    @{ $j->{targets} }), 'json: target health');

$t->reload;
is(series(status_json(), 'm')->{requests}{'2xx'}, 7, 'reload: kept');

###############################################################################
# Prometheus text

my $r = LLMGW::http($t, $t->port(0), 'GET', '/llm_status?format=prometheus',
    {}, undef);
is($r->{status}, 200, 'prometheus: 200');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
    'prometheus: content type');
like($r->{body}, qr/^nginx_llm_requests_total\{route="m",provider="p",model="gpt-4o-mini",code="2xx"\} 7$/m,
    'prometheus: requests');
like($r->{body}, qr/^nginx_llm_fallbacks_total\{route="fb",[^}]*\} 1$/m,
    'prometheus: fallbacks');
like($r->{body}, qr/^nginx_llm_cache_requests_total\{zone="llm",result="hit"\} 1$/m,
    'prometheus: cache hits');
$t->write_file('metrics.txt', $r->{body});

SKIP: {
    skip 'promtool not found', 2
        unless system('command -v promtool >/dev/null 2>&1') == 0;
    my $dir = $t->testdir;
    my $out = `promtool check metrics < '$dir/metrics.txt' 2>&1`;
    is($?, 0, 'promtool check metrics') or diag($out);
    $out = `promtool check config '$FindBin::Bin/../examples/prometheus.yml' 2>&1`;
    is($?, 0, 'promtool check config examples/prometheus.yml') or diag($out);
}

SKIP: {
    skip 'prometheus not found', 1
        unless system('command -v prometheus >/dev/null 2>&1') == 0;
    my $dir = $t->testdir;
    my $pport = $t->free_port;
    my $target = '127.0.0.1:' . $t->port(0);
    $t->write_file('prometheus.yml', <<"EOF");
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: llm
    metrics_path: /llm_status
    params:
      format: [prometheus]
    static_configs:
      - targets: ['$target']
EOF
    my $pid = fork();
    if ($pid == 0) {
        open STDOUT, '>', "$dir/prometheus.log";
        open STDERR, '>&', \*STDOUT;
        exec 'prometheus', "--config.file=$dir/prometheus.yml",
            "--storage.tsdb.path=$dir/tsdb",
            "--web.listen-address=127.0.0.1:$pport";
        exit 1;
    }
    my $q = 'nginx_llm_requests_total{route="m",code="2xx"}';
    $q =~ s/([^A-Za-z0-9_])/sprintf('%%%02X', ord $1)/ge;
    my $value;
    wait_until {
        my $a = LLMGW::http($t, $pport, 'GET', "/api/v1/query?query=$q",
            {}, undef);
        my $res = ref $a->{json} eq 'HASH' ? $a->{json}{data}{result} : undef;
        $value = $res && @$res ? $res->[0]{value}[1] : undef;
        defined $value;
    } timeout => 20, interval => 0.5;
    is($value, 7, 'prometheus server: scraped and queried');
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

###############################################################################
# HTML in a browser

$r = LLMGW::http($t, $t->port(0), 'GET', '/llm_status',
    { Accept => 'text/html' }, undef);
like($r->{headers}{'content-type'}, qr{^text/html}, 'html: by Accept');
like($r->{body}, qr{<td>gpt-4o-mini</td><td>7</td>}, 'html: numbers served');
unlike($r->{body}, qr{<(?:link|img)\b|src=}, 'html: no external assets');

SKIP: {
    my $chromium = `command -v chromium 2>/dev/null`;
    chomp $chromium;
    skip 'chromium not found', 3 unless $chromium;
    my $dir = $t->testdir;
    my $url = 'http://127.0.0.1:' . $t->port(0) . '/llm_status?format=html';
    my @flags = ('--headless', '--no-sandbox', '--disable-gpu',
        '--disable-dev-shm-usage', "--user-data-dir=$dir/chromium",
        '--enable-logging=stderr', '--v=0', '--virtual-time-budget=6000');
    system("'$chromium' @flags --window-size=1200,800 "
        . "--screenshot='$dir/status.png' '$url' 2>>'$dir/chromium-shot.log'"
        . " >/dev/null");
    ok(-s "$dir/status.png", 'browser: screenshot')
        and diag("screenshot: $dir/status.png");
    my $dom = `'$chromium' @flags --dump-dom '$url' 2>'$dir/chromium.log'`;
    like($dom, qr{<td>gpt-4o-mini</td><td>7</td>},
        'browser: the numbers, after the page refreshed itself');
    my $log = $t->read_file('chromium.log') // '';
    unlike($log, qr/CONSOLE.*(?:Uncaught|Error)/,
        'browser: no console error');
}

###############################################################################
# allow/deny, the series cap

$r = LLMGW::http($t, $t->port(0), 'GET', '/denied', {}, undef);
is($r->{status}, 403, 'deny all: 403');

for my $i (1 .. 8) {
    chat($t, "free-model-$i", text => 'many series');
}
$j = status_json();
ok(scalar @{ $j->{series} } <= 7, 'cap: at most 6 series and other ('
    . scalar(@{ $j->{series} }) . ')');
my $other = series($j, 'other');
ok(($other->{requests}{'2xx'} // 0) >= 1, 'cap: the rest counted in other');

$t->done;
