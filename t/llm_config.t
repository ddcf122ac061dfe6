#!/usr/bin/perl

# Configuration: nginx -t accepts the shipped examples and rejects bad
# values with a message naming the directive and the value.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;

my $t = LLMGW->new;
my $dir = $t->testdir;

$t->write_file('key', "sk-config-test\n");
$t->write_file('empty.key', "\n");

# a valid base configuration; each case below changes one line of it
my $base = <<'EOF';
http {
    llm_provider  openai  format=openai  pass=/_llm/openai/
                  key_file=%%TESTDIR%%/key;
    llm_provider  claude  format=anthropic  pass=/_llm/claude/;
    llm_provider  az      format=azure  pass=/_llm/az/ api_version=2024-10-21;
    llm_provider  gem     format=gemini  pass=/_llm/gem/;
    #PROVIDER#

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location /v1/ {
            llm_gateway;
            llm_route  gpt-4o  openai:gpt-4o  az:dep weight=2  claude:c backup;
            llm_route  *       openai;
            #ROUTE#
        }
        #SERVER#
        location /_llm/ { internal; proxy_pass http://127.0.0.1:1/; }
    }
}
EOF

sub conf {
    my (%o) = @_;
    my $c = $base;
    for my $k (qw(PROVIDER ROUTE SERVER)) {
        my $v = $o{lc $k} // '';
        $c =~ s/#$k#/$v/;
    }
    return $c;
}

my ($rc, $out) = $t->nginx_t(conf());
is($rc, 0, 'base configuration is valid') or diag($out);

for my $ok ('llm_fallback error timeout http_429 http_5xx;',
    'llm_fallback off;', 'llm_fallback_tries 2;',
    'llm_route fast openai:a weight=3 az:b weight=1;')
{
    ($rc, $out) = $t->nginx_t(conf(route => $ok));
    is($rc, 0, "accepted: $ok") or diag($out);
}

# the shipped examples
my @examples = glob "$LLMGW::REPO/examples/*.conf";

SKIP: {
    skip 'no examples/*.conf yet', 1 unless @examples;

    for my $file (@examples) {
        open my $fh, '<', $file or die "$file: $!";
        my $text = do { local $/; <$fh> };
        close $fh;
        (my $name = $file) =~ s{.*/}{};

        # our modules, and key files that exist
        $text =~ s/^\s*load_module\s+[^;]*ngx_http_llm_[^;]*;//mg;
        $text =~ s/key_file=\S+?(?=[\s;])/key_file=$dir\/key/g;

        # relative paths are against the prefix (the repository top in
        # the example's instructions), which has a logs/ directory
        mkdir "$dir/logs";
        my ($rc, $out) = $t->nginx_t($text);
        is($rc, 0, "examples/$name passes nginx -t") or diag($out);
    }
}

# rejected values: [name, conf, directive, value-regexp]
my @bad = (
    ['unknown format',
        conf(provider => 'llm_provider p format=bogus pass=/_llm/p/;'),
        'llm_provider', qr/bogus/],
    ['missing format',
        conf(provider => 'llm_provider p pass=/_llm/p/;'),
        'llm_provider', qr/format/],
    ['missing pass=',
        conf(provider => 'llm_provider p format=openai;'),
        'llm_provider', qr/pass/],
    ['unreadable key_file',
        conf(provider => 'llm_provider p format=openai pass=/_llm/p/'
            . " key_file=$dir/no-such.key;"),
        'llm_provider', qr/\Q$dir\E\/no-such\.key/],
    ['empty key_file',
        conf(provider => 'llm_provider p format=openai pass=/_llm/p/'
            . " key_file=$dir/empty.key;"),
        'llm_provider', qr/empty\.key/],
    ['unknown llm_provider parameter',
        conf(provider => 'llm_provider p format=openai pass=/_llm/p/'
            . ' colour=blue;'),
        'llm_provider', qr/colour=blue/],
    ['duplicate provider',
        conf(provider => 'llm_provider openai format=openai pass=/_llm/x/;'),
        'llm_provider', qr/openai/],
    ['llm_provider in server context',
        conf(server => 'llm_provider q format=openai pass=/_llm/q/;'),
        'llm_provider', qr/not allowed here/],
    ['llm_route with unknown provider',
        conf(route => 'llm_route m nowhere:model-x;'),
        'llm_route', qr/nowhere/],
    ['llm_route weight=0',
        conf(route => 'llm_route m openai:a weight=0;'),
        'llm_route', qr/weight=0/],
    ['llm_route weight=x',
        conf(route => 'llm_route m openai:a weight=x;'),
        'llm_route', qr/weight=x/],
    ['llm_route with no targets',
        conf(route => 'llm_route m;'),
        'llm_route', qr/"m"|no targets|invalid number of arguments/],
    ['llm_route with only a weight',
        conf(route => 'llm_route m weight=2;'),
        'llm_route', qr/weight=2|no targets/],
    ['llm_route empty model',
        conf(route => 'llm_route m openai:;'),
        'llm_route', qr/openai:/],
    ['duplicate llm_route',
        conf(route => 'llm_route gpt-4o openai;'),
        'llm_route', qr/gpt-4o/],
    # (nginx's own bitmask parser: "invalid value" with file:line, no
    # directive name, like proxy_next_upstream)
    ['llm_fallback unknown condition',
        conf(route => 'llm_fallback error bogus_cond;'),
        undef, qr/bogus_cond/],
);

for my $b (@bad) {
    my ($name, $c, $directive, $re) = @$b;
    my ($rc, $out) = $t->nginx_t($c);
    isnt($rc, 0, "$name: rejected");
    like($out, qr/\[emerg\].*\Q$directive\E/, "$name: names $directive")
        or diag($out) if defined $directive;
    like($out, $re, "$name: names the value") or diag($out);
}

$t->done;
