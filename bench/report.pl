#!/usr/bin/perl
# bench/report.pl META RAW TTFB PROFILE > results.md
# Called by bench/run; turns its raw measurements into bench/results.md.

use strict;
use warnings;

my ($meta_file, $raw_file, $ttfb_file, $profile_file) = @ARGV;

my %meta;
open my $fh, '<', $meta_file or die "$meta_file: $!";
while (<$fh>) {
    chomp;
    my ($k, $v) = split /=/, $_, 2;
    $meta{$k} = $v;
}
close $fh;

# $run{name}{mode}[rep] = {rps => .., p50 => .., ...}
my (%run, @order);
open $fh, '<', $raw_file or die "$raw_file: $!";
while (<$fh>) {
    chomp;
    my ($name, $mode, $rep, $kv) = split /\t/, $_, 4;
    my %r = map { split /=/, $_, 2 } split ' ', $kv // '';
    push @order, $name unless $run{$name};
    $run{$name}{$mode}[$rep - 1] = \%r;
}
close $fh;

# $ttfb{name} = [[start_us, total_us], ...]; $ttfb_rep{name}[rep] = [...]
my (%ttfb, %ttfb_rep, @ttfb_order);
open $fh, '<', $ttfb_file or die "$ttfb_file: $!";
while (<$fh>) {
    chomp;
    my ($name, $rep, $st, $tot) = split /\t/;
    push @ttfb_order, $name unless $ttfb{$name};
    push @{$ttfb{$name}}, [$st, $tot];
    push @{$ttfb_rep{$name}[$rep - 1]}, [$st, $tot];
}
close $fh;

my $profile = do {
    local $/;
    open my $p, '<', $profile_file or die "$profile_file: $!";
    <$p>;
};


sub median {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return undef unless @v;
    my $i = int($p / 100 * @v + 0.999999) - 1;
    $i = 0 if $i < 0;
    $i = $#v if $i > $#v;
    return $v[$i];
}

sub field {
    my ($name, $mode, $f) = @_;
    return () unless $run{$name} && $run{$name}{$mode};
    return map { defined $_ ? $_->{$f} : undef } @{$run{$name}{$mode}};
}

sub med { median(field(@_)) }

# median over reps of a per-rep combination of two scenarios
sub paired {
    my ($a, $b, $mode, $f, $op) = @_;
    my @x = field($a, $mode, $f);
    my @y = field($b, $mode, $f);
    my @v;
    for my $i (0 .. $#x) {
        next unless defined $x[$i] && defined $y[$i];
        next if $op eq '/' && !$y[$i];
        push @v, $op eq '/' ? $x[$i] / $y[$i] : $x[$i] - $y[$i];
    }
    return median(@v);
}

# CPU time per request of the whole machine at saturation (all CPUs busy:
# wrk, the nginx workers, node), A minus B, median over repetitions
sub cpu_added {
    my ($a, $b) = @_;
    my @x = field($a, 'sat', 'rps');
    my @y = field($b, 'sat', 'rps');
    my @v;
    for my $i (0 .. $#x) {
        next unless $x[$i] && $y[$i];
        push @v, $meta{nproc} * 1e6 / $x[$i] - $meta{nproc} * 1e6 / $y[$i];
    }
    return median(@v);
}

sub fmt {
    my ($v, $f) = @_;
    return 'n/a' unless defined $v;
    return sprintf($f // '%.0f', $v);
}

sub us {
    my $v = shift;
    return 'n/a' unless defined $v;
    return sprintf('%.0f', $v);
}

sub signed {
    my $v = shift;
    return 'n/a' unless defined $v;
    return sprintf('%+.0f', $v);
}


my %desc = (
    'upstream-direct'     => 'wrk straight to llm_mock (the upstream\'s own '
                             . 'ceiling)',
    'baseline'            => 'plain nginx proxy_pass to llm_mock '
                             . '(keepalive upstream)',
    'gw-openai'           => 'gateway, OpenAI-format target (passthrough, '
                             . 'model rewrite)',
    'gw-anthropic'        => 'gateway, Anthropic-format target (full '
                             . 'translation)',
    'gw-spend'            => 'gateway, OpenAI-format target, with one '
                             . 'budget and one rpm/tpm limit (llm_zone)',
    'gw-spend-redis'      => 'the same, the zone synced to a local '
                             . 'redis-server every second (llm_redis)',
    'gw-status'           => 'gateway as gw-openai, in an nginx with '
                             . 'llm_status (every request counted), scraped '
                             . 'once a second',
    'baseline-stream'     => 'plain proxy_pass of llm_mock\'s OpenAI SSE '
                             . 'stream',
    'gw-openai-stream'    => 'gateway streaming, OpenAI-format target',
    'gw-anthropic-stream' => 'gateway streaming, Anthropic-format target '
                             . '(SSE translation)',
    'return200'           => 'nginx `return 200` of the same JSON body '
                             . '(cache-hit ceiling)',
    'cache-hit'           => 'gateway answering from llm_cache (exact '
                             . 'hit, the same body each time)',
    'cache-semantic'      => 'gateway answering from llm_cache by a '
                             . 'semantic hit (a paraphrase of a stored '
                             . 'question, builtin embedder)',
    'portkey'             => "Portkey gateway $meta{portkey} (node "
                             . "$meta{node}, --headless), openai provider, "
                             . 'custom host = llm_mock',
);

my $sat = "-t$meta{threads} -c$meta{conns}";

print <<EOF;
# Benchmark results

Written by `bench/run` (see bench/README.md); do not edit by hand.

- Date: $meta{date}
- Machine: $meta{nproc} CPUs, $meta{cpu}, $meta{kernel}
- Load average at the start / end of the run: $meta{loadavg_start} / $meta{loadavg_end}
  (at the end the machine also ran: $meta{other_procs})
- nginx $meta{nginx}, $meta{wrk}, node $meta{node}, \@portkey-ai/gateway
  $meta{portkey}, jansson $meta{jansson}, module at commit $meta{commit}
- Method: every wrk run lasts $meta{duration} s; $meta{reps} repetitions, each
  going through all scenarios in turn (A B C ... A B C ...) so that drift
  hits all alike; figures are medians over the repetitions, ratios are
  medians of the per-repetition ratios.  Concurrency 1 is `wrk -t1 -c1`,
  saturation is `wrk $sat`.  Latencies are wrk's, in microseconds.
- Setup: two nginx instances, one worker each.  llm_mock runs in its own
  instance; the instance under test serves baseline, gateway and
  return 200 on separate ports, one at a time, with the same
  `upstream { keepalive 64; }` block and proxy settings
  (`proxy_http_version 1.1`, `Connection ""`, `proxy_buffering off`).
  Portkey runs as one node process.  wrk, both nginx workers and node share
  the machine's $meta{nproc} CPUs.

## Scenarios

| scenario | what | c=1 rps | c=1 p50 us | c=1 p99 us | sat rps | sat p50 us | sat p99 us | sat rps per rep | errors |
|---|---|---:|---:|---:|---:|---:|---:|---|---:|
EOF

for my $n (@order) {
    my @reps = map { fmt($_) } field($n, 'sat', 'rps');
    my $err = 0;
    for my $mode (keys %{$run{$n}}) {
        for my $r (@{$run{$n}{$mode}}) {
            next unless $r;
            $err += ($r->{$_} // 0) for qw(non2xx connect read write timeout);
            $err++ unless $r->{requests};
        }
    }
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
        $n, $desc{$n} // '',
        fmt(med($n, 'c1', 'rps')), us(med($n, 'c1', 'p50')),
        us(med($n, 'c1', 'p99')),
        fmt(med($n, 'sat', 'rps')), us(med($n, 'sat', 'p50')),
        us(med($n, 'sat', 'p99')), join(' / ', @reps), $err;
}

print <<EOF;

"errors" counts non-2xx answers and socket errors over all runs of the
scenario; it must be 0.

## Ratios

| comparison | sat rps ratio | c=1 rps ratio | added p50 us (c=1) | added p99 us (c=1) | added CPU us per request (sat) |
|---|---:|---:|---:|---:|---:|
EOF

my @pairs = (
    ['gw-openai', 'baseline'],
    ['gw-anthropic', 'baseline'],
    ['gw-spend', 'baseline'],
    ['gw-spend', 'gw-openai'],
    ['gw-spend-redis', 'gw-spend'],
    ['gw-status', 'gw-openai'],
    ['gw-openai-stream', 'baseline-stream'],
    ['gw-anthropic-stream', 'baseline-stream'],
    ['baseline', 'upstream-direct'],
    ['return200', 'baseline'],
    ['cache-hit', 'return200'],
    ['cache-semantic', 'return200'],
    ['gw-openai', 'portkey'],
    ['gw-anthropic', 'portkey'],
    ['baseline', 'portkey'],
);

for my $p (@pairs) {
    my ($a, $b) = @$p;
    next unless $run{$a} && $run{$b};
    my $c1 = $run{$a}{c1} && $run{$b}{c1};
    my $cpu = cpu_added($a, $b);
    printf "| %s / %s | %s | %s | %s | %s | %s |\n", $a, $b,
        fmt(paired($a, $b, 'sat', 'rps', '/'), '%.2fx'),
        $c1 ? fmt(paired($a, $b, 'c1', 'rps', '/'), '%.2fx') : 'n/a',
        $c1 ? signed(paired($a, $b, 'c1', 'p50', '-')) : 'n/a',
        $c1 ? signed(paired($a, $b, 'c1', 'p99', '-')) : 'n/a',
        signed($cpu);
}

print <<EOF;

Added p99 at c=1 is mostly noise on this machine (a p99 of 5 s of requests
at c=1 is set by a few scheduling hiccups, and other processes share the 2
CPUs), and can come out negative; the p50 is the stable figure.  "Added
CPU per request" is $meta{nproc} CPUs / sat rps of A minus the same for B: the
extra CPU time the whole machine spends per request, assuming all CPUs are
busy at saturation.

`baseline / upstream-direct` shows how close the plain proxy comes to the
upstream's own ceiling: the upstream is not the bottleneck when wrk straight
to llm_mock is well above the proxied rates (all share $meta{nproc} CPUs, so
"well above" means roughly 1.5x or more).

## Streaming: time to first byte and total

$meta{ttfb_n} sequential requests per repetition on one keepalive connection
(`curl -w '%{time_starttransfer} %{time_total}'`), $meta{reps} repetitions
interleaved; microseconds over all samples.  llm_mock sends its whole
stream at once, so TTFB and total are close.

| scenario | TTFB p50 | TTFB p99 | total p50 | total p99 | added TTFB p50 | added total p50 | samples |
|---|---:|---:|---:|---:|---:|---:|---:|
EOF

my $base_st = $ttfb{'baseline-stream'};
for my $n (@ttfb_order) {
    my @st = map { $_->[0] } @{$ttfb{$n}};
    my @tot = map { $_->[1] } @{$ttfb{$n}};
    my ($dst, $dtot) = ('', '');
    if ($n ne 'baseline-stream' && $base_st) {
        my (@a, @b);
        for my $i (0 .. $#{$ttfb_rep{$n}}) {
            my $x = $ttfb_rep{$n}[$i];
            my $y = $ttfb_rep{'baseline-stream'}[$i];
            next unless $x && $y;
            push @a, median(map { $_->[0] } @$x) - median(map { $_->[0] } @$y);
            push @b, median(map { $_->[1] } @$x) - median(map { $_->[1] } @$y);
        }
        ($dst, $dtot) = (signed(median(@a)), signed(median(@b)));
    }
    printf "| %s | %s | %s | %s | %s | %s | %s | %d |\n", $n,
        us(median(@st)), us(pct(99, @st)), us(median(@tot)),
        us(pct(99, @tot)), $dst, $dtot, scalar @st;
}

my $rss = sub {
    my ($s, $e) = @_;
    return 'n/a' unless $s && $e && $s =~ /^\d+$/ && $e =~ /^\d+$/;
    return sprintf '%d kB before, %d kB after (%+d kB)', $s, $e, $e - $s;
};

print "\n## Memory (VmRSS)\n\n";
print "- gateway nginx worker (serves baseline, gateway, return 200): ",
    $rss->($meta{gw_rss_start}, $meta{gw_rss_end}), "\n";
print "- llm_mock nginx worker: ",
    $rss->($meta{mock_rss_start}, $meta{mock_rss_end}), "\n";
print "- Portkey node process: ",
    $rss->($meta{pk_rss_start}, $meta{pk_rss_end}), "\n";

# targets
my @t;
sub target {
    my ($what, $val, $goal, $ok) = @_;
    push @t, sprintf "| %s | %s | %s | %s |", $what, $val, $goal,
        !defined $ok ? 'n/a' : $ok ? 'pass' : 'FAIL';
}

my $r;
$r = paired('gw-openai', 'baseline', 'sat', 'rps', '/');
target('passthrough rps / proxy_pass rps (saturation)', fmt($r, '%.2fx'),
       '>= 0.9x', defined $r ? $r >= 0.9 : undef);
$r = paired('gw-openai', 'baseline', 'c1', 'p50', '-');
target('passthrough added p50 at c=1', signed($r) . ' us', '<= 50 us',
       defined $r ? $r <= 50 : undef);
$r = paired('gw-openai', 'baseline', 'c1', 'p99', '-');
target('passthrough added p99 at c=1', signed($r) . ' us', '<= 200 us',
       defined $r ? $r <= 200 : undef);
$r = paired('gw-anthropic', 'baseline', 'sat', 'rps', '/');
target('Anthropic translation rps / proxy_pass rps (saturation)',
       fmt($r, '%.2fx'), '>= 0.8x', defined $r ? $r >= 0.8 : undef);
$r = paired('gw-spend', 'baseline', 'sat', 'rps', '/');
target('one budget and one limit: rps / proxy_pass rps (saturation)',
       fmt($r, '%.2fx'), '>= 0.85x', defined $r ? $r >= 0.85 : undef);
$r = paired('gw-spend', 'gw-openai', 'c1', 'p50', '-');
target('one budget and one limit: added p50 over the gateway at c=1',
       signed($r) . ' us', '<= 20 us', defined $r ? $r <= 20 : undef);
$r = paired('gw-spend-redis', 'gw-spend', 'sat', 'rps', '/');
target('budget and limit with Redis sync: rps / without Redis (saturation)',
       fmt($r, '%.2fx'), '>= 0.95x', defined $r ? $r >= 0.95 : undef);
$r = paired('gw-status', 'gw-openai', 'sat', 'rps', '/');
target('llm_status counting, scraped each second: rps / without '
       . '(saturation)', fmt($r, '%.2fx'), '>= 0.97x',
       defined $r ? $r >= 0.97 : undef);
$r = paired('cache-hit', 'return200', 'sat', 'rps', '/');
target('cache hit rps / return 200 rps (saturation)', fmt($r, '%.2fx'),
       '>= 0.8x', defined $r ? $r >= 0.8 : undef);
$r = $run{portkey} ? paired('gw-openai', 'portkey', 'sat', 'rps', '/')
                   : undef;
target('gateway (passthrough) rps / Portkey rps (saturation)',
       $run{portkey} ? fmt($r, '%.1fx') : "Portkey $meta{portkey_status}",
       '>= 10x', defined $r ? $r >= 10 : undef);
$r = $run{portkey} ? paired('gw-anthropic', 'portkey', 'sat', 'rps', '/')
                   : undef;
target('gateway (Anthropic) rps / Portkey rps (saturation)',
       $run{portkey} ? fmt($r, '%.1fx') : 'n/a', '>= 10x',
       defined $r ? $r >= 10 : undef);

print "\n## Targets\n\n| target | measured | goal | result |\n|---|---|---|---|\n";
print "$_\n" for @t;

print <<EOF;

Portkey: $meta{portkey_status}.

## Profile: the gateway worker at saturation

`perf record -e cpu-clock -F 999 --call-graph dwarf -p WORKER` for
$meta{duration} s while wrk saturates the gateway with the scenario's request,
read with bench/profile.pl.  This VM has no hardware counters, hence
cpu-clock; jansson's internal functions have no symbols (no debug package),
so jansson is shown by its exported entry points.  The kernel's share
includes the loopback TCP stack of both ends of each connection.

$profile
EOF
