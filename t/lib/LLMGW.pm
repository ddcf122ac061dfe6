package LLMGW;

# Test harness for ngx_http_llm_gateway_module, nginx-tests style.
# Core Perl modules only.
#
#   use FindBin; use lib "$FindBin::Bin/lib";
#   use LLMGW;
#
#   my $t = LLMGW->new;                # skip_all if the module is not built
#   my $mock = $t->run_mock;           # node t/mock/provider.js
#   $t->write_file('key', "sk-test\n");
#   $t->write_conf(<<'EOF');           # %%PORT_n%% %%MOCK%% %%MODULE%%
#                                      # %%MOCK_MODULE%%
#   http { server { listen 127.0.0.1:%%PORT_0%%; ... } }   # %%TESTDIR%%
#   EOF
#   $t->run;
#   my $r = http($t, $t->port(0), 'POST', '/v1/chat/completions',
#                {}, { model => 'x', messages => [...] });
#   is($r->{status}, 200);
#   $t->done;                          # error.log check + done_testing
#
#   wait_until { cond } timeout => 5;  # a bounded poll (see below)
#
# Requests and checks the test files share (chat, stream, post, asked,
# log_lines, error_is, refused, ...) are in LLMGW::Chat (t/lib/LLMGW/Chat.pm).
#
# write_conf() adds, unless the text has its own: load_module (of the
# gateway, and of the mock module too if the text uses llm_mock), daemon on,
# worker_processes 1, pid, error_log <dir>/error.log info, "user root" when
# run as root, events {} (at the end), and at the top of http {}: the temp
# paths (client_body_temp_path, proxy_temp_path, ...) inside the test
# directory and access_log <dir>/access.log.
#
# Environment:
#   LLMGW_MODULE  the .so (default <repo>/build/ngx_http_llm_gateway_module.so)
#   LLMGW_MOCK_MODULE  the llm_mock .so (default ngx_http_llm_mock_module.so
#                 next to LLMGW_MODULE)
#   LLMGW_NGINX   the nginx binary (default /usr/sbin/nginx)
#   LLMGW_KEEP    keep the test directory (printed with diag)
#   LLMGW_NODE    the node binary (default node)
#   LLMGW_ASAN    1: run nginx with libasan preloaded, for a module built
#                 with CFLAGS_EXTRA=-fsanitize=address
#                 LDFLAGS_EXTRA=-fsanitize=address ./build.sh; reports go
#                 to error.log and fail the test

use strict;
use warnings;

use Test::More ();
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use IO::Socket::INET;
use IO::Select;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use JSON::PP;
use Exporter qw(import);

our @EXPORT = qw(http http_stream json_decode json_encode mock_requests
    mock_reset mock_last proxy_location sse_parse wait_until);

our $REPO = abs_path(dirname(abs_path(__FILE__)) . '/../..');

my @INSTANCES;
my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub json_encode { $JSON->encode($_[0]) }

sub json_decode {
    my ($s) = @_;
    return undef unless defined $s;
    my $v = eval { $JSON->decode($s) };
    return $v;
}

sub new {
    my ($class, %opts) = @_;

    my $module = $ENV{LLMGW_MODULE}
        // "$REPO/build/ngx_http_llm_gateway_module.so";
    $module = abs_path($module) // $module if -e $module;

    my $mock_module = $ENV{LLMGW_MOCK_MODULE}
        // dirname($module) . '/ngx_http_llm_mock_module.so';

    if (!$opts{no_module} && !-f $module) {
        Test::More::plan(skip_all => "module not built: $module");
    }

    my $nginx = $ENV{LLMGW_NGINX} // '/usr/sbin/nginx';
    if (!-x $nginx) {
        Test::More::plan(skip_all => "no nginx binary: $nginx");
    }

    my $dir = tempdir('llmgw-XXXXXXXX', TMPDIR => 1,
        CLEANUP => $ENV{LLMGW_KEEP} ? 0 : 1);
    chmod 0755, $dir;
    Test::More::diag("test directory: $dir") if $ENV{LLMGW_KEEP};

    my $self = bless {
        dir      => $dir,
        module   => $module,
        mock_module => $mock_module,
        nginx    => $nginx,
        ports    => {},
        taken    => {},
        mocks    => [],
        pid      => undef,
        done     => 0,
        no_module => $opts{no_module},
        owner    => $$,     # forked children must not stop anything
    }, $class;

    push @INSTANCES, $self;

    # killed (timeout, ^C): still stop nginx and the mock via END
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { exit 1 } if !$SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
    }

    return $self;
}

sub testdir { $_[0]{dir} }
sub module  { $_[0]{module} }

sub free_port {
    my ($self) = @_;
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => 0, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
            or die "cannot bind: $!";
        my $p = $s->sockport;
        close $s;
        next if $self->{taken}{$p}++;
        return $p;
    }
    die "no free port";
}

sub port {
    my ($self, $n) = @_;
    $n //= 0;
    return $self->{ports}{$n} //= $self->free_port;
}

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '>', $path or die "write $path: $!";
    binmode $fh;
    print $fh $content;
    close $fh;
    return $path;
}

sub read_file {
    my ($self, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '<', $path or return undef;
    binmode $fh;
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c;
}

sub error_log { $_[0]->read_file('error.log') // '' }

# A bounded poll, for a test that waits for a state (a cool-down over, a
# log line written, a count reached) rather than for time to pass:
#
#   wait_until { cond } timeout => 5, interval => 0.05;
#
# calls the block at once and then every interval seconds until it returns
# true or timeout seconds have passed, and returns its last value (false
# at the deadline: the test's own check then fails and says what).  A wait
# that must let time pass (a cool-down must NOT have ended yet) stays a
# sleep, with a comment on its margin.
sub wait_until(&@) {
    my ($cond, %o) = @_;
    my $end = time + ($o{timeout} // 5);
    while (1) {
        my $v = $cond->();
        return $v if $v || time >= $end;
        sleep($o{interval} // 0.05);
    }
}

# wait until a file (relative to the test dir) matches a regexp; returns
# its content (as it is at the deadline if it never matched)
sub wait_for_file {
    my ($self, $name, $re, $timeout) = @_;
    my $c;
    wait_until(sub {
        $c = $self->read_file($name);
        defined $c && $c =~ $re;
    }, timeout => $timeout // 5);
    return $c;
}


# ---------------------------------------------------------------- mock

sub run_mock {
    my ($self, %opts) = @_;
    my $node = $ENV{LLMGW_NODE} // 'node';
    my $script = "$REPO/t/mock/provider.js";
    my $n = scalar @{ $self->{mocks} };
    my $log = "$self->{dir}/mock$n.log";

    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or die;
        open STDERR, '>>', $log or die;
        $| = 1;
        exec $node, $script, $opts{port} // 0 or die "exec $node: $!";
    }
    close $w;

    my $sel = IO::Select->new($r);
    my $line = '';
    my $end = time + 10;
    while (time < $end && $line !~ /\n/) {
        last unless $sel->can_read($end - time);
        my $got = sysread($r, my $buf, 256);
        last unless $got;
        $line .= $buf;
    }
    close $r;
    my ($port) = $line =~ /listening\D*(\d+)/;
    if (!$port) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        die "mock provider did not start: '$line' "
            . ($self->read_file("mock$n.log") // '');
    }
    push @{ $self->{mocks} }, { pid => $pid, port => $port };
    $self->{ports}{"mock$n"} = $port;
    return $port;
}

sub mock_port {
    my ($self, $n) = @_;
    my $m = $self->{mocks}[$n // 0] or die "run_mock() first";
    return $m->{port};
}

sub stop_mocks {
    my ($self) = @_;
    for my $m (@{ $self->{mocks} }) {
        next unless $m->{pid};
        kill 'TERM', $m->{pid};
        my $end = time + 3;
        while (time < $end) {
            last if waitpid($m->{pid}, WNOHANG) != 0;
            sleep 0.02;
        }
        if (kill 0, $m->{pid}) {
            kill 'KILL', $m->{pid};
            waitpid $m->{pid}, 0;
        }
        $m->{pid} = undef;
    }
}

# recorded requests of mock n (default 0), optionally since a reset
sub mock_requests {
    my ($self, $n) = @_;
    my $r = http($self, $self->mock_port($n), 'GET', '/__requests');
    # http() has decoded the body already: decoding megabytes twice with
    # JSON::PP costs seconds
    return $r->{json} // [];
}

sub mock_last {
    my ($self, $n) = @_;
    my $all = mock_requests($self, $n);
    return $all->[-1];
}

sub mock_reset {
    my ($self, $n) = @_;
    http($self, $self->mock_port($n), 'POST', '/__reset');
}

# an internal location proxying to the mock: proxy_location('openai')
sub proxy_location {
    my ($name, %o) = @_;
    my $port = $o{port} // '%%MOCK%%';
    my $extra = $o{extra} // '';
    return <<"EOF";
        location /_llm/$name/ {
            internal;
            proxy_pass http://127.0.0.1:$port/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            $extra
        }
EOF
}


# ---------------------------------------------------------------- config

sub write_conf {
    my ($self, $text) = @_;
    $self->{conf_text} = $self->_subst($text);
    $self->write_file('nginx.conf', $self->_render('error.log'));
    return "$self->{dir}/nginx.conf";
}

sub _subst {
    my ($self, $text) = @_;
    $text =~ s/%%PORT_(\w+)%%/$self->port($1)/ge;
    $text =~ s/%%MOCK(\d*)%%/$self->mock_port($1 eq '' ? 0 : $1)/ge;
    $text =~ s/%%MODULE%%/$self->{module}/g;
    $text =~ s/%%MOCK_MODULE%%/$self->{mock_module}/g;
    $text =~ s/%%TESTDIR%%/$self->{dir}/g;
    return $text;
}

sub _render {
    my ($self, $errlog) = @_;
    my $c = $self->{conf_text} // die "write_conf() first";
    my $d = $self->{dir};
    my $head = '';

    if (!$self->{no_module} && $c !~ /^\s*load_module\b/m) {
        $head .= "load_module $self->{module};\n";
        $head .= "load_module $self->{mock_module};\n"
            if $c =~ /\bllm_mock\s*;/;
    }
    $head .= "daemon on;\n" if $c !~ /^\s*daemon\b/m;
    $head .= "master_process on;\n" if $c !~ /^\s*master_process\b/m;
    $head .= "worker_processes 1;\n" if $c !~ /^\s*worker_processes\b/m;
    $head .= "pid $d/nginx.pid;\n" if $c !~ /^\s*pid\b/m;
    $head .= "error_log $d/$errlog info;\n" if $c !~ /^error_log\b/m;
    $head .= "user root;\n" if $> == 0 && $c !~ /^\s*user\b/m;

    # last: the text's own load_module lines must come before events {}
    my $tail = $c =~ /^\s*events\s*\{/m ? '' : "\nevents {}\n";

    my $http = '';
    for my $p (qw(client_body proxy fastcgi uwsgi scgi)) {
        $http .= "    ${p}_temp_path $d/${p}_temp;\n"
            if $c !~ /\b${p}_temp_path\b/;
    }
    $http .= "    access_log $d/access.log;\n";
    $c =~ s/^(\s*http\s*\{[^\n]*\n)/$1$http/m;

    return $head . $c . $tail;
}

sub _listen_ports {
    my ($self) = @_;
    my $c = $self->{conf_text} // '';
    my @p;
    while ($c =~ /^\s*listen\s+(?:(?:[\d.]+|localhost|\*):)?(\d+)\b/mg) {
        push @p, $1;
    }
    return @p;
}

sub nginx_t {
    my ($self, $text) = @_;
    $self->{conf_text} = $self->_subst($text) if defined $text;
    my $conf = $self->write_file('nginx_t.conf', $self->_render('error_t.log'));
    my $d = $self->{dir};
    my $cmd = $self->_env . "'$self->{nginx}' -t -p '$d/' -c '$conf'"
        . " -e '$d/error_t.log'"
        . " 2>&1";
    my $out = `$cmd`;
    my $rc = $? >> 8;
    return ($rc, $out);
}

sub _pid {
    my ($self) = @_;
    my $c = $self->read_file('nginx.pid') // return undef;
    my ($p) = $c =~ /(\d+)/;
    return $p;
}

sub _children {
    my ($pid) = @_;
    my @k;
    for my $s (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $s or next;
        my $l = <$fh> // next;
        close $fh;
        # pid (comm) state ppid
        if ($l =~ /^(\d+) \(.*\) \S+ (\d+) /s && $2 == $pid) {
            push @k, $1;
        }
    }
    return @k;
}

sub _wait_ports {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 10);
    for my $p ($self->_listen_ports) {
        while (1) {
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p",
                Proto => 'tcp', Timeout => 1);
            if ($s) { close $s; last; }
            return 0 if time > $end;
            sleep 0.05;
        }
    }
    return 1;
}

sub run {
    my ($self) = @_;
    my $d = $self->{dir};
    $self->write_file('nginx.conf', $self->_render('error.log'));
    unlink "$d/nginx.pid";
    my $cmd = $self->_env
        . "'$self->{nginx}' -p '$d/' -c '$d/nginx.conf' -e '$d/error.log'"
        . " >>'$d/nginx.stderr' 2>&1";
    system($cmd);
    my $rc = $? >> 8;
    if ($rc != 0) {
        die "nginx failed to start (exit $rc):\n"
            . ($self->read_file('nginx.stderr') // '')
            . ($self->error_log);
    }
    my $end = time + 10;
    while (!$self->_pid && time < $end) { sleep 0.02; }
    $self->{pid} = $self->_pid or die "nginx did not write its pid file\n"
        . $self->error_log;
    $self->_wait_ports or die "nginx ports do not accept\n"
        . $self->error_log;

    # workers that die at start leave the ports accepting and nobody
    # answering: fail now rather than time out on every request.  A time
    # to let pass, not a state to poll for (what is checked is that no
    # crash comes within it); a worker that crashes later is still caught:
    # done() checks error.log, and http() notes a crash when a request fails
    sleep 0.3;
    if ($self->worker_crashed) {
        my @bad = _distinct($self->bad_log_lines);
        $self->stop;
        die "nginx workers crash at start:\n"
            . join("\n", @bad[0 .. ($#bad > 40 ? 40 : $#bad)]) . "\n";
    }
    return $self;
}

sub reload {
    my ($self) = @_;
    my $pid = $self->{pid} or die "not running";
    $self->write_file('nginx.conf', $self->_render('error.log'));
    my %old = map { $_ => 1 } _children($pid);
    kill 'HUP', $pid;
    my $end = time + 10;
    while (time < $end) {
        my @now = _children($pid);
        my @new = grep { !$old{$_} } @now;
        my @stay = grep { $old{$_} } @now;
        if (@new && !@stay) {
            $self->_wait_ports;
            return 1;
        }
        sleep 0.05;
    }
    return 0;
}

sub stop {
    my ($self) = @_;
    my $pid = $self->{pid} or return;
    kill 'QUIT', $pid;
    wait_until { !_alive($pid) } timeout => 10, interval => 0.02;
    if (_alive($pid)) {
        Test::More::diag("nginx $pid did not quit, killing");
        kill 'TERM', $pid;
        sleep 1;
        kill 'KILL', $pid if _alive($pid);
    }
    $self->{pid} = undef;
}

# a process runs: the nginx master is not our child (daemon on), so once
# it has exited (after its workers) it may stay a zombie until init reaps
# it, seconds later on some systems, and kill 0 still finds it
sub _alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return !-d '/proc/self';
    my $l = <$fh> // return 0;
    close $fh;
    return $l =~ /^\d+ \(.*\) [ZXx] /s ? 0 : 1;
}

# a worker died (signal): later requests use short timeouts
sub worker_crashed {
    my ($self) = @_;
    return $self->{crashed} ||=
        ($self->error_log =~ /worker process \d+ exited on signal/ ? 1 : 0);
}

# lines without their time, pids and connection numbers, once each
sub _distinct {
    my %seen;
    my @out;
    for my $l (@_) {
        (my $k = $l) =~ s/^\S+ \S+ //;
        $k =~ s/\d+/N/g;
        push @out, $l unless $seen{$k}++;
    }
    return @out;
}

# environment for nginx
sub _env {
    my ($self) = @_;
    return '' unless $ENV{LLMGW_ASAN};
    my $lib = `gcc -print-file-name=libasan.so 2>/dev/null`;
    chomp $lib;
    my $leaks = $ENV{LLMGW_LEAKS} ? 1 : 0;
    # every nginx dynamic module defines ngx_modules, ngx_module_names and
    # ngx_module_order, which nginx looks up per library: loading both the
    # gateway and the mock would report them as an ODR violation
    return "LD_PRELOAD='$lib' "
        . "ASAN_OPTIONS='detect_leaks=$leaks:halt_on_error=1:"
        . "detect_odr_violation=0' ";
}

# lines of error.log (and nginx's stderr) that must never appear
sub bad_log_lines {
    my ($self) = @_;
    my @bad;
    for my $f (qw(error.log nginx.stderr)) {
        my $c = $self->read_file($f) // next;
        for my $l (split /\n/, $c) {
            push @bad, $l if $l =~ /\[(?:alert|emerg|crit)\]|AddressSanitizer|LeakSanitizer|runtime error:/;
        }
    }
    return @bad;
}

# stop everything, check the logs, done_testing
sub done {
    my ($self) = @_;
    $self->stop;
    $self->stop_mocks;
    if (-e "$self->{dir}/error.log" || -e "$self->{dir}/nginx.stderr") {
        my @bad = _distinct($self->bad_log_lines);
        Test::More::ok(!@bad, 'error.log has no alert/crit/emerg/sanitizer'
            . ' lines') or Test::More::diag(join "\n", @bad[0 .. ($#bad > 20
                ? 20 : $#bad)]);
    }
    $self->{done} = 1;
    Test::More::done_testing();
}

sub DESTROY {
    my ($self) = @_;
    local $?;
    return if $$ != ($self->{owner} // 0);
    $self->stop if $self->{pid};
    $self->stop_mocks;
}

END {
    local $?;
    for my $t (@INSTANCES) {
        next if $$ != $t->{owner};
        $t->stop if $t->{pid};
        $t->stop_mocks;
    }
}


# ---------------------------------------------------------------- http

# http($t, $port, $method, $uri, \%headers, $body, %opt)
# $body: a string, or a reference (sent as JSON).  Header values may be
# array references (repeated headers).  %opt: timeout (s, default 15).
# Returns a hash reference: status, headers (lowercased names; repeated
# headers joined with ", "), body, json (decoded body or undef), raw,
# chunked (1 if chunked), clean (chunked: ended with the 0-chunk;
# otherwise: Content-Length bytes received, or read to EOF), timed_out,
# t_first (s to the first body byte), t_total.
sub http {
    my ($t, $port, $method, $uri, $headers, $body, %opt) = @_;
    $headers //= {};
    my %h = map { lc($_) => $headers->{$_} } keys %$headers;

    if (ref $body) {
        $body = json_encode($body);
        $h{'content-type'} //= 'application/json';
    }
    $h{host} //= "127.0.0.1:$port";
    $h{connection} //= 'close';
    $h{'content-length'} //= length($body)
        if defined $body && !exists $h{'transfer-encoding'};

    my $req = "$method $uri HTTP/1.1\r\n";
    for my $k (sort keys %h) {
        next unless defined $h{$k};
        for my $v (ref $h{$k} ? @{ $h{$k} } : $h{$k}) {
            $req .= "$k: $v\r\n";
        }
    }
    $req .= "\r\n";
    $req .= $body if defined $body;

    my $start = time;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
        Proto => 'tcp', Timeout => 5)
        or return { status => 0, error => "connect: $!", headers => {},
                    body => '', raw => '' };
    $s->autoflush(1);

    my $off = 0;
    my $sel = IO::Select->new($s);
    while ($off < length $req) {
        my $n = syswrite($s, $req, 65536, $off);
        if (!defined $n) {
            last;   # the server may answer early (413) and close
        }
        $off += $n;
    }

    my $raw = '';
    my $timeout = $opt{timeout} // 15;
    $timeout = 2 if $timeout > 2 && ref $t && $t->{crashed};
    my $end = time + $timeout;
    my ($timed_out, $t_first, $hdr_end) = (0, undef, undef);
    while (1) {
        my $left = $end - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            $timed_out = 1;
            last;
        }
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
        if (!defined $hdr_end) {
            my $i = index($raw, "\r\n\r\n");
            $hdr_end = $i + 4 if $i >= 0;
        }
        $t_first //= time - $start
            if defined $hdr_end && length($raw) > $hdr_end;
    }
    close $s;

    my $r = _parse_response($raw);
    if (($timed_out || !$r->{status}) && ref $t && $t->can('worker_crashed')
        && $t->worker_crashed)
    {
        Test::More::diag('nginx worker crashed (see error.log)')
            unless $t->{crash_noted}++;
    }
    $r->{timed_out} = $timed_out;
    $r->{t_first} = $t_first;
    $r->{t_total} = time - $start;
    return $r;
}

sub _parse_response {
    my ($raw) = @_;
    my %r = (raw => $raw, status => 0, headers => {}, body => '',
        clean => 0, chunked => 0);
    my $i = index($raw, "\r\n\r\n");
    return \%r if $i < 0;
    my $head = substr($raw, 0, $i);
    my $rest = substr($raw, $i + 4);
    my @lines = split /\r\n/, $head;
    my $sl = shift @lines;
    ($r{status}) = $sl =~ m{^HTTP/\d\.\d (\d{3})};
    $r{status} //= 0;
    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        push @{ $r{header_list} }, [$k, $v];
        $r{headers}{$k} = exists $r{headers}{$k}
            ? "$r{headers}{$k}, $v" : $v;
    }

    my $te = $r{headers}{'transfer-encoding'} // '';
    if ($te =~ /chunked/i) {
        $r{chunked} = 1;
        my $body = '';
        my @sizes;
        while (1) {
            if ($rest !~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                last;
            }
            my $n = hex $1;
            push @sizes, $n;
            if ($n == 0) {
                # optional trailers, then CRLF
                $r{clean} = 1 if $rest =~ /^(?:[^\r\n]+\r\n)*\r\n/;
                last;
            }
            last if length($rest) < $n + 2;
            $body .= substr($rest, 0, $n);
            last if substr($rest, $n, 2) ne "\r\n";
            $rest = substr($rest, $n + 2);
        }
        $r{body} = $body;
        $r{chunk_sizes} = \@sizes;
    } elsif (defined $r{headers}{'content-length'}) {
        my $n = $r{headers}{'content-length'};
        $r{body} = substr($rest, 0, $n);
        $r{clean} = length($rest) >= $n ? 1 : 0;
    } else {
        $r{body} = $rest;
        $r{clean} = 1;
    }
    $r{json} = json_decode($r{body});
    return \%r;
}

# Parse an SSE body: returns a list of {event, data} (data lines joined
# with "\n"); handles \n, \r\n and \r line ends.
sub sse_parse {
    my ($body) = @_;
    my @ev;
    my %cur;
    my @data;
    for my $line (split /\r\n|\r|\n/, $body, -1) {
        if ($line eq '') {
            if (@data || defined $cur{event}) {
                push @ev, { event => $cur{event}, data => join("\n", @data) };
            }
            %cur = ();
            @data = ();
            next;
        }
        next if $line =~ /^:/;
        my ($f, $v) = $line =~ /^([^:]*)(?::\s?(.*))?$/;
        $v //= '';
        if ($f eq 'data') { push @data, $v }
        elsif ($f eq 'event') { $cur{event} = $v }
    }
    # an unterminated last event is not an event (per the SSE spec)
    return @ev;
}

# http_stream: like http (the request is the same) but the body is parsed
# as SSE.  Adds: events ([{event, data}]), data ([payload strings]),
# chunks ([decoded JSON of each data payload that is JSON]), done (the
# last data payload is "[DONE]"), text (concatenated delta.content of
# the chunks), plus clean (chunked body ended with the 0-chunk).
sub http_stream {
    my $r = http(@_);
    my @ev = sse_parse($r->{body});
    $r->{events} = \@ev;
    $r->{data} = [map { $_->{data} } @ev];
    $r->{chunks} = [grep { defined } map { json_decode($_) }
        grep { $_ ne '[DONE]' } @{ $r->{data} }];
    $r->{done} = @ev && $ev[-1]{data} eq '[DONE]' ? 1 : 0;
    my $text = '';
    for my $c (@{ $r->{chunks} }) {
        next unless ref $c eq 'HASH' && ref $c->{choices} eq 'ARRAY';
        for my $ch (@{ $c->{choices} }) {
            my $d = $ch->{delta} // next;
            $text .= $d->{content} if defined $d->{content}
                && !ref $d->{content};
        }
    }
    $r->{text} = $text;
    return $r;
}

1;
