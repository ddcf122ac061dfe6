#!/usr/bin/perl

# The benchmark's smoke mode: every scenario of bench/run answers
# correctly (status and body), no timings.

use strict;
use warnings;

use FindBin;
use File::Basename qw(dirname);
use Test::More;

my $top = "$FindBin::Bin/..";
my $module = $ENV{LLMGW_MODULE}
    // "$top/build/ngx_http_llm_gateway_module.so";

plan(skip_all => "no module at $module") unless -f $module;
plan(skip_all => 'curl is missing') if system('command -v curl >/dev/null');
plan(skip_all => 'bench/run does not preload ASan') if $ENV{LLMGW_ASAN};

my $dir = dirname($module);
my $out = `BUILD_DIR='$dir' '$top/bench/run' --smoke --no-build --no-portkey 2>&1`;
my $rc = $? >> 8;

is($rc, 0, 'bench/run --smoke: every scenario answers') or diag($out);
like($out, qr/smoke: all \d+ scenarios answer correctly/, 'smoke summary');

done_testing();
