package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// flagSet is a subcommand's flags with a usage text that explains the
// command: the usage line, what it does, every flag with its default and
// an example.
type flagSet struct {
	*flag.FlagSet
	usage, about, example string
}

func newFlagSet(name, usage, about, example string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("qgate "+name, flag.ContinueOnError),
		usage: usage, about: about, example: example}
	fs.Usage = func() { fs.printUsage(fs.Output()) }
	return fs
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", fs.usage, strings.TrimSpace(fs.about))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nExample:\n%s\n", fs.example)
}

// parse parses args. --help prints the usage to stdout and returns
// flag.ErrHelp; a bad flag prints the error and the usage to stderr and
// returns errUsage.
func (fs *flagSet) parse(e *env, args []string) error {
	if slices.ContainsFunc(args, func(a string) bool {
		return a == "-h" || a == "-help" || a == "--help" || a == "--h"
	}) {
		fs.printUsage(e.stdout)
		return flag.ErrHelp
	}
	fs.SetOutput(e.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// usageErr reports a usage mistake found after parsing.
func (fs *flagSet) usageErr(e *env, format string, args ...any) error {
	fmt.Fprintf(e.stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
	return errUsage
}

// listFlag is a repeatable flag that also splits on commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// attrFlag collects repeated key=value attributes.
type attrFlag map[string]string

func (a attrFlag) String() string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + a[k]
	}
	return strings.Join(parts, ",")
}

func (a attrFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	a[k] = v
	return nil
}
