#!/usr/bin/perl
# bench/profile.pl < `perf script -F ip,sym,dso` output (with call chains)
#
# Called by bench/run.  Prints markdown: where the sampled process spent its
# time by shared object (self), the module's functions (ngx_http_llm_*) by
# inclusive and self share, and jansson by entry point and by the module
# function that called it.  Percentages are of all samples.

use strict;
use warnings;

my $top = shift // 20;

my ($total, %dso_self, %llm_incl, %llm_self, %jentry, %jcaller, %jleaf);
my ($jansson, $malloc, $malloc_jansson) = (0, 0, 0);
my @frames;

sub base {
    my $d = shift // '';
    $d =~ s{.*/}{};
    return $d;
}

sub is_malloc {
    return $_[0] =~ /^(_int_malloc|malloc|_int_free|free|cfree\@\S+|
                       malloc_consolidate|unlink_chunk\S*|_int_realloc|
                       realloc|calloc|__libc_\w*alloc|tcache\w*)$/x;
}

sub sample {
    return unless @frames;
    $total++;

    # frames[0] is the leaf
    # an inlined frame belongs to the object of the frame it sits in
    for my $i (reverse 0 .. $#frames) {
        if ($frames[$i][1] eq '' && $i < $#frames) {
            $frames[$i][1] = $frames[$i + 1][1];
        }
    }

    $dso_self{base($frames[0][1])}++;

    my (%seen, $outer_j);
    for my $i (0 .. $#frames) {
        my ($sym, $dso) = @{$frames[$i]};
        if ($sym =~ /^ngx_http_llm_/ && !$seen{$sym}++) {
            $llm_incl{$sym}++;
        }
        $outer_j = $i if $dso =~ /jansson/;
    }

    my $leaf = $frames[0][0];
    $llm_self{$leaf}++ if $leaf =~ /^ngx_http_llm_/;

    if (is_malloc($leaf)) {
        $malloc++;
        $malloc_jansson++ if defined $outer_j;
    }

    return unless defined $outer_j;

    $jansson++;

    my $entry = $frames[$outer_j][0];
    $entry = '(internal)' if $entry =~ /^\[unknown\]|^0x/;

    my $caller = '(other)';
    for my $i ($outer_j + 1 .. $#frames) {
        if ($frames[$i][0] =~ /^ngx_http_llm_/) {
            $caller = $frames[$i][0];
            last;
        }
    }

    $jentry{$entry}++;
    $jcaller{"$entry <- $caller"}++;
}

while (<STDIN>) {
    chomp;
    if (/^\s*$/) {
        sample();
        @frames = ();
        next;
    }
    next unless /^\s+[0-9a-f]+\s+(.*?)\s*(?:\((.*)\))?$/;
    my ($sym, $dso) = ($1, $2 // '');
    $dso = '' if $dso eq 'inlined';
    $sym =~ s/\+0x[0-9a-f]+$//;
    $sym = '[unknown]' if $sym eq '';
    push @frames, [$sym, $dso];
}
sample();

unless ($total) {
    print "No samples.\n";
    exit 0;
}

sub pct { sprintf '%.1f%%', 100 * $_[0] / $total }

sub table {
    my ($title, $h, $n, $extra) = @_;
    my @k = sort { $h->{$b} <=> $h->{$a} || $a cmp $b } keys %$h;
    splice @k, $n if @k > $n;
    print "| $title | share |", ($extra ? " self |" : ''), "\n";
    print "|---|---:|", ($extra ? "---:|" : ''), "\n";
    for my $k (@k) {
        print "| `$k` | ", pct($h->{$k}), " |",
            ($extra ? ' ' . pct($extra->{$k} // 0) . ' |' : ''), "\n";
    }
    print "\n";
}

print "$total samples.\n\n";

print "By shared object (self time):\n\n";
table('object', \%dso_self, 12);

print "The module's functions, inclusive (the function and what it calls,",
    " jansson and the kernel included) and self:\n\n";
table('function', \%llm_incl, $top, \%llm_self);

printf "jansson, inclusive: %s of the worker's time (malloc/free called by"
    . " jansson: %s; all malloc/free: %s).  By entry point:\n\n",
    pct($jansson), pct($malloc_jansson), pct($malloc);
table('jansson entry point', \%jentry, 12);

print "By entry point and the module function that called it:\n\n";
table('entry point <- caller', \%jcaller, 15);
