package LLMGW::Chat;

# Requests and checks the test files share, on top of LLMGW.pm.  Core Perl
# modules only.
#
#   use LLMGW;
#   use LLMGW::Chat;
#
#   chat_defaults($t, headers => { Authorization => 'Bearer x' });
#   my $r = chat($t, 'gpt-4o');          # POST /v1/chat/completions, "hi"
#   $r = chat($t, 'gpt-4o', text => 'x' x 3000, stream => 1);
#   $r = chat($t, { model => 'claude', messages => [...], tools => [...] });
#   $r = stream($t, ...);                # chat(..., stream => 1)
#   $r = post($t, '{"model":"x",...}');  # a body as it is (string or ref)
#   $r = post($t, { model => 'e', input => 'x' }, uri => '/v1/embeddings');
#   my @m = asked($t);                   # models the mock was asked for
#   @m = asked($t, format => 1);         # "openai:gpt-4o gemini:gem-x"
#   my @l = log_lines($t, 'llm.log');    # lines of a file of the test dir
#   my $l = log_line($t, 'llm.log', qr/^a /);  # wait for a line, return it
#   refused($r, 'invalid_json', 'name'); # is 400, is error.code
#   error_is($r, 404, $type, $code, $param, 'name');  # an OpenAI error
#   my ($rc, $plan, $seen) = sdk_run($dir, 'label', $base, $model, $emb);
#                                        # t/sdk/run.mjs, one ok() a check
#
# chat() and stream() build the body { model, messages, ... } from a model
# name, or take the whole body as a hash reference; they answer what
# http() (or, streamed, http_stream()) answers.  Options, for chat(),
# stream() and post() (the body ones for chat() and stream() only):
#
#   port      the port name, as in %%PORT_n%% (default 0)
#   uri       default /v1/chat/completions
#   headers   request headers (these replace the defaults' headers);
#             Content-Type is application/json unless given
#   text      the user message (default "hi"), or
#   messages  the messages
#   body      more members of the body: { tools => [...], max_tokens => 5 }
#   stream    1: the answer read as SSE (chat(): and "stream": true)
#   reset     1: mock_reset() first, so that asked() sees this request only
#   timeout   seconds (default 15, as http())
#
# chat_defaults($t, %options) sets a test instance's defaults for all of
# them; an option given to a call wins (and its text drops the default
# messages, its messages the default text).

use strict;
use warnings;

use Test::More ();
use LLMGW;
use Exporter qw(import);

our @EXPORT = qw(chat_defaults chat stream post asked log_lines log_line
    refused error_is sdk_run);

sub chat_defaults {
    my ($t, %o) = @_;
    $t->{llmgw_chat} = \%o;
}

sub _options {
    my ($t, %o) = @_;
    my %d = %{ $t->{llmgw_chat} // {} };
    delete $d{messages} if exists $o{text};
    delete $d{text} if exists $o{messages};
    return (%d, %o);
}

sub chat {
    my ($t, $what, @opt) = @_;
    my %o = _options($t, @opt);
    my $body = ref $what ? { %$what }
        : { model => $what, messages => $o{messages}
                // [{ role => 'user', content => $o{text} // 'hi' }] };
    %$body = (%$body, %{ $o{body} }) if $o{body};
    $body->{stream} = JSON::PP::true if $o{stream};
    return _send($t, $body, %o);
}

sub stream {
    my ($t, $what, @opt) = @_;
    return chat($t, $what, @opt, stream => 1);
}

sub post {
    my ($t, $body, @opt) = @_;
    return _send($t, $body, _options($t, @opt));
}

sub _send {
    my ($t, $body, %o) = @_;
    my %h = %{ $o{headers} // {} };
    $h{'Content-Type'} = 'application/json'
        unless grep { lc eq 'content-type' } keys %h;
    LLMGW::mock_reset($t) if $o{reset};
    my $f = $o{stream} ? \&LLMGW::http_stream : \&LLMGW::http;
    return $f->($t, $t->port($o{port} // 0), 'POST',
        $o{uri} // '/v1/chat/completions', \%h, $body,
        defined $o{timeout} ? (timeout => $o{timeout}) : ());
}

# what mock n (option mock, default 0) was asked for since its last reset,
# in order: the body's model, or "?"; with format => 1 "format:model",
# the model of a Gemini request taken from its path
sub asked {
    my ($t, %o) = @_;
    my @s;
    for my $q (@{ LLMGW::mock_requests($t, $o{mock}) }) {
        my $m = ref $q->{json} eq 'HASH' ? $q->{json}{model} : undef;
        if (!$o{format}) {
            push @s, $m // '?';
            next;
        }
        my $p = $q->{path} // '';
        if ($p eq '/v1/chat/completions' || $p eq '/v1/embeddings') {
            push @s, 'openai:' . ($m // '?');
        } elsif ($p eq '/v1/messages') {
            push @s, 'anthropic:' . ($m // '?');
        } elsif ($p =~ m{^/v1beta/models/([^:]+):}) {
            push @s, "gemini:$1";
        } else {
            push @s, "?:$p";
        }
    }
    return @s;
}

# the lines of a file of the test directory (their number in scalar
# context)
sub log_lines {
    my ($t, $name) = @_;
    my @l = split /\n/, $t->read_file($name) // '';
    return @l;
}

# the last line of a file of the test directory that matches $re, waiting
# for it (timeout => 5 s): nginx writes an access log line just after the
# client has seen the end of the answer; undef if none came
sub log_line {
    my ($t, $name, $re, %o) = @_;
    my $line;
    wait_until {
        ($line) = reverse grep { $_ =~ $re } log_lines($t, $name);
        defined $line;
    } timeout => $o{timeout} // 5;
    return $line;
}

# a request refused by the gateway: status 400 (or status => n) with the
# error code $code; returns the error object
sub refused {
    my ($r, $code, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $status = $o{status} // 400;
    Test::More::is($r->{status}, $status, "$name: $status")
        or Test::More::diag(substr($r->{raw} // '', 0, 300));
    my $e = ($r->{json} // {})->{error} // {};
    Test::More::is($e->{code}, $code, "$name: $code");
    return $e;
}

# an OpenAI-shaped error answer: status, JSON content type, an "error"
# object with message, type, param and code; then the type unless undef,
# the code when given and not '*', the param when given and not '*'
sub error_is {
    my ($r, $status, $type, $code, $param, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($r->{status}, $status, "$name: status $status")
        or Test::More::diag(substr($r->{raw} // '', 0, 600));
    Test::More::like($r->{headers}{'content-type'} // '',
        qr{^application/json}, "$name: JSON content-type");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    Test::More::ok(ref $e eq 'HASH', "$name: body is {\"error\":{...}}")
        or return Test::More::diag($r->{body});
    Test::More::ok(defined $e->{message} && !ref $e->{message}
        && $e->{message} ne '', "$name: message");
    Test::More::ok(exists $e->{param} && exists $e->{code}
        && exists $e->{type}, "$name: type, param and code present");
    Test::More::is($e->{type}, $type, "$name: type $type") if defined $type;
    Test::More::is($e->{code}, $code, "$name: code " . ($code // 'null'))
        if @_ > 3 && $code ne '*';
    Test::More::is($e->{param}, $param, "$name: param " . ($param // 'null'))
        if @_ > 4 && (!defined $param || $param ne '*');
}

# t/sdk/run.mjs (the OpenAI SDK) from the directory $sdk (or the script
# $sdk, a path ending in .mjs) with @args: one
# ok() per check it prints, named "$label: <check>" (a skip for its
# "# SKIP"), its other lines as diag; returns (exit code, its plan, the
# number of checks seen)
sub sdk_run {
    my ($sdk, $label, @args) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $argv = join ' ', map { "'$_'" } @args;
    my $script = $sdk =~ /\.mjs$/ ? $sdk : "$sdk/run.mjs";
    my @out = `node '$script' $argv 2>&1`;
    my $rc = $? >> 8;
    my ($plan, $seen) = (undef, 0);
    for my $l (@out) {
        chomp $l;
        if ($l =~ /^(not )?ok (\d+) - (.*?)(?: # SKIP (.*))?$/) {
            my ($not, $name, $skip) = ($1, $3, $4);
            $seen++;
            my $why;
            ($name, $why) = split /: /, $name, 2 if $not;
            SKIP: {
                Test::More::skip("$label: $name: $skip", 1) if defined $skip;
                Test::More::ok(!$not, "$label: $name")
                    or Test::More::diag("$label: $name: $why");
            }
        } elsif ($l =~ /^1\.\.(\d+)$/) {
            $plan = $1;
        } else {
            Test::More::diag("$label: $l");
        }
    }
    return ($rc, $plan, $seen);
}

1;
