#!/usr/bin/perl

# Requests and tokens per minute (llm_limit, docs/budgets.md):
#
#  - rpm: the request past the limit gets 429 rate_limit_exceeded with
#    Retry-After and OpenAI's x-ratelimit-* headers, which every answer
#    under the limit carries too; other keys are not affected;
#  - tpm: tokens are counted from the prompt's estimate and max_tokens,
#    then set to what the provider counted; a request larger than the
#    limit is refused at once, without Retry-After;
#  - two limits on one request: both must let it through, and one that
#    refuses leaves the other uncounted;
#  - the windows survive nginx -s reload, and free up as the minute
#    passes (Retry-After is honest: waited for, then served).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use LLMGW;
use LLMGW::Chat;

my $t = LLMGW->new;
my $mock = $t->run_mock;

my $conf = <<'EOF';
http {
    llm_zone llm 1m;
    %%OFFSET%%

    llm_provider p format=openai pass=/_llm/p/;

    map $http_authorization $key {
        ~^Bearer\ (?<k>\S+)$  $k;
        default               anonymous;
    }

    server {
        listen 127.0.0.1:%%PORT_0%%;

        llm_route m p:m;

        location /r/v1/ {
            llm_gateway;
            llm_limit llm $key rpm=3;
        }

        location /t/v1/ {
            llm_gateway;
            llm_limit llm t:$key tpm=1000;
        }

        location /both/v1/ {
            llm_gateway;
            llm_limit llm b:$key rpm=100;
            llm_limit llm b2:$key rpm=2;
        }

        location /nokey/v1/ {
            llm_gateway;
            llm_limit llm $http_x_team rpm=1;
        }

        location /short/v1/ {
            llm_gateway;
            llm_limit llm s:$key rpm=1;
        }
EOF
$conf .= proxy_location('p') . "    }\n}\n";

(my $c = $conf) =~ s/%%OFFSET%%//;
$t->write_conf($c);
$t->run;

sub ask {
    my ($where, $key, %o) = @_;
    return chat($t, 'm', uri => "/$where/v1/chat/completions",
        headers => { Authorization => "Bearer $key" }, %o);
}

###############################################################################
# rpm

my @r = map { ask('r', 'k1') } 1 .. 3;
is(join(' ', map { $_->{status} } @r), '200 200 200', 'rpm: 3 served');
is($r[0]{headers}{'x-ratelimit-limit-requests'}, '3', 'rpm: limit header');
is(join(' ', map { $_->{headers}{'x-ratelimit-remaining-requests'} } @r),
    '2 1 0', 'rpm: remaining counts down');
like($r[2]{headers}{'x-ratelimit-reset-requests'}, qr/^(\d+s|\d+m\d+s)$/,
    'rpm: reset header');
ok(!defined $r[0]{headers}{'x-ratelimit-limit-tokens'},
    'rpm: no token headers without tpm');

my $r = ask('r', 'k1');
error_is($r, 429, 'requests', 'rate_limit_exceeded', undef, 'rpm: 4th');
like($r->{json}{error}{message},
    qr/^Rate limit reached for requests per min \(RPM\): Limit 3, Used 3, Requested 1\. Please try again in \d+s\.$/,
    'rpm: message');
my $ra = $r->{headers}{'retry-after'} // 0;
ok($ra >= 55 && $ra <= 61, "rpm: Retry-After $ra");
is($r->{headers}{'x-ratelimit-remaining-requests'}, '0',
    'rpm: remaining 0 on the refusal');

$r = ask('r', 'k2');
is($r->{status}, 200, 'rpm: another key is served');

# the refusal was not counted, and nothing reached the provider
LLMGW::mock_reset($t);
$r = ask('r', 'k1');
is($r->{status}, 429, 'rpm: still refused');
is(scalar @{ LLMGW::mock_requests($t) }, 0, 'rpm: provider not asked');

###############################################################################
# tpm: "hi" is about 40 tokens of estimate, max_tokens counts in full

$r = ask('t', 'k1', body => { max_tokens => 400 });
is($r->{status}, 200, 'tpm: served');
is($r->{headers}{'x-ratelimit-limit-tokens'}, '1000', 'tpm: limit header');
my $left = $r->{headers}{'x-ratelimit-remaining-tokens'};
ok($left > 500 && $left < 600, "tpm: remaining after the reservation ($left)");

# settled to what the provider counted (3 tokens): room again for 900; this
# one produces 801
$r = ask('t', 'k1', body => { max_tokens => 900 }, text => '__words_800__');
is($r->{status}, 200, 'tpm: settled to the real count');

$r = ask('t', 'k1', body => { max_tokens => 300 });
error_is($r, 429, 'tokens', 'rate_limit_exceeded', undef, 'tpm: over');
like($r->{json}{error}{message}, qr/tokens per min \(TPM\): Limit 1000/,
    'tpm: message');
ok(($r->{headers}{'retry-after'} // 0) > 0, 'tpm: Retry-After');

$r = ask('t', 'k3', body => { max_tokens => 5000 });
error_is($r, 429, 'tokens', 'rate_limit_exceeded', undef, 'tpm: too large');
like($r->{json}{error}{message}, qr/^Request too large for tokens per min/,
    'tpm: too large message');
ok(!defined $r->{headers}{'retry-after'}, 'tpm: too large: no Retry-After');

###############################################################################
# an empty key is not limited

@r = map { ask('nokey', 'k1') } 1 .. 3;
is(join(' ', map { $_->{status} } @r), '200 200 200', 'empty key: not limited');
ok(!defined $r[0]{headers}{'x-ratelimit-limit-requests'},
    'empty key: no headers');
$r = chat($t, 'm', uri => '/nokey/v1/chat/completions',
    headers => { 'X-Team' => 'blue' });
is($r->{status}, 200, 'a key: first');
$r = chat($t, 'm', uri => '/nokey/v1/chat/completions',
    headers => { 'X-Team' => 'blue' });
is($r->{status}, 429, 'a key: limited');

###############################################################################
# two limits

@r = map { ask('both', 'k1') } 1 .. 3;
is(join(' ', map { $_->{status} } @r), '200 200 429', 'two limits: the '
    . 'tighter refuses');
is($r[1]{headers}{'x-ratelimit-limit-requests'}, '2',
    'two limits: headers of the tighter');

###############################################################################
# reload keeps the windows

$t->reload;
$r = ask('r', 'k1');
is($r->{status}, 429, 'reload: still refused');

###############################################################################
# the window frees up when the minute has passed (the clock moved by
# llm_test_time_offset, as a test cannot wait a minute)

$r = ask('short', 'k9');
is($r->{status}, 200, 'window: first');
$r = ask('short', 'k9');
is($r->{status}, 429, 'window: second refused');
$ra = $r->{headers}{'retry-after'};
ok($ra >= 59 && $ra <= 61, "window: Retry-After $ra");

($c = $conf) =~ s/%%OFFSET%%/llm_test_time_offset 30s;/;
$t->write_conf($c);
$t->reload;
$r = ask('short', 'k9');
is($r->{status}, 429, 'window: 30 s later, still refused');
my $ra2 = $r->{headers}{'retry-after'};
ok($ra2 >= $ra - 31 && $ra2 <= $ra - 29, "window: Retry-After now $ra2");

($c = $conf) =~ s/%%OFFSET%%/llm_test_time_offset 62s;/;
$t->write_conf($c);
$t->reload;
$r = ask('short', 'k9');
is($r->{status}, 200, 'window: a minute later, served');

$t->done;
