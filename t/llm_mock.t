#!/usr/bin/perl

# llm_mock, the fake provider: a module of its own, which works without the
# gateway and which the gateway alone does not know; behind the gateway in
# every format, text with quotes, escapes and non-ASCII characters comes out
# the same whether the stream events are translated through a tree or
# copied.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;

my $T = JSON::PP::true;

my $alone = <<'EOF';
http {
    server {
        listen 127.0.0.1:%%PORT_2%%;
        location / { llm_mock; }
    }
}
EOF

my ($rc, $out) = $t->nginx_t("load_module %%MODULE%%;\n$alone");
isnt($rc, 0, 'the gateway alone: llm_mock is refused');
like($out, qr/unknown directive "llm_mock"/,
    'the gateway alone: unknown directive');

$t->write_conf("load_module %%MOCK_MODULE%%;\n$alone");
$t->run;

my $r = chat($t, 'm', text => 'Hi', port => 2);
is($r->{status}, 200, 'the mock module alone: 200');
is($r->{json}{choices}[0]{message}{content},
    'Hello from llm_mock. You said: Hi', 'the mock module alone: content');

$t->stop;

$t->write_conf(<<'EOF');
http {
    llm_provider local      format=openai    pass=/_llm/local/;
    llm_provider local-az   format=azure     pass=/_llm/local/;
    llm_provider local-ant  format=anthropic pass=/_llm/local/;
    llm_provider local-gem  format=gemini    pass=/_llm/local/;

    server {
        listen 127.0.0.1:%%PORT_0%%;

        location /v1/ {
            llm_gateway;
            llm_route  openai     local:mock-gpt;
            llm_route  azure      local-az:mock-deployment;
            llm_route  anthropic  local-ant:claude-mock;
            llm_route  gemini     local-gem:gemini-mock;
        }

        location /_llm/local/ {
            internal;
            proxy_pass http://127.0.0.1:%%PORT_1%%/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { llm_mock; }
    }
}
EOF
$t->run;

my $text = "say \"caf\x{e9}\" \\ \t tab \x{1f600} end";
my $want = "Hello from llm_mock. You said: $text";

for my $model (qw(openai azure anthropic gemini)) {
    $r = chat($t, $model, text => $text);
    is($r->{status}, 200, "$model: 200");
    is($r->{json}{choices}[0]{message}{content}, $want, "$model: content");
    ok($r->{json}{usage}{prompt_tokens} > 0, "$model: usage");

    $r = stream($t, $model, text => $text,
        body => { stream_options => { include_usage => $T } });
    is($r->{status}, 200, "$model: stream 200");

    my ($finish, $usage, $role);
    for my $c (@{ $r->{chunks} }) {
        $usage = $c->{usage} if ref $c->{usage};
        my $ch = $c->{choices}[0] or next;
        $role //= $ch->{delta}{role};
        $finish //= $ch->{finish_reason};
    }
    my $got = $r->{text};

    is($role, 'assistant', "$model: stream role");
    is($got, $want, "$model: stream content");
    is($finish, 'stop', "$model: stream finish_reason");
    ok($usage && $usage->{completion_tokens} > 0, "$model: stream usage");
    ok($r->{done} && $r->{clean}, "$model: stream [DONE], clean end");
}

$t->done;
