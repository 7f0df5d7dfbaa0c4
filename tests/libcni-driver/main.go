// libcni-driver: drives a CNI chain through the reference runtime library
// (github.com/containernetworking/cni/libcni, Debian's
// golang-github-appc-cni-dev) exactly as containerd and CRI-O do, for the
// end-to-end tests in tests/tests/chain_libcni.rs.
//
//	libcni-driver add|check|del|load --conflist FILE [--container-id ID]
//	    [--netns PATH] [--ifname eth0] [--args 'K=V;K=V']
//	    [--cap-args JSON] [--cni-path DIR:DIR] [--cache-dir DIR]
//
// add prints the chain's result as JSON. load only parses the conflist
// (ConfListFromFile) and prints what libcni made of it. On failure it
// prints {"error": ..., "code": ..., "msg": ..., "details": ...} on stdout
// (code/msg/details from the failing plugin's CNI error, when there is one),
// the error on stderr, and exits 1; bad usage exits 2.
//
// Built in GOPATH mode, offline, against Debian's packaged sources:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o OUT ./tests/libcni-driver
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "libcni-driver: %s\nusage: libcni-driver add|check|del|load --conflist FILE [--container-id ID] [--netns PATH] [--ifname IF] [--args 'K=V;..'] [--cap-args JSON] [--cni-path DIRS] [--cache-dir DIR]\n", msg)
	os.Exit(2)
}

// parseArgs turns containerd-style CNI_ARGS ("K=V;K=V") into libcni's pairs.
func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid --args entry %q (want K=V)", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// fail reports err (with the plugin's CNI error code when it carries one)
// and exits 1.
func fail(err error) {
	report := map[string]interface{}{"error": err.Error()}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		report["code"] = cniErr.Code
		report["msg"] = cniErr.Msg
		report["details"] = cniErr.Details
	}
	out, _ := json.Marshal(report)
	fmt.Println(string(out))
	fmt.Fprintf(os.Stderr, "libcni-driver: %v\n", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		usage("missing verb")
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet("libcni-driver", flag.ContinueOnError)
	conflist := fs.String("conflist", "", "conflist file")
	containerID := fs.String("container-id", "", "container id")
	netns := fs.String("netns", "", "netns path (empty: like containerd's second DEL)")
	ifname := fs.String("ifname", "eth0", "interface name in the container")
	cniArgs := fs.String("args", "", "CNI_ARGS as K=V;K=V")
	capArgs := fs.String("cap-args", "{}", "capability args as a JSON object")
	cniPath := fs.String("cni-path", "/opt/cni/bin", "plugin directories, ':'-separated")
	cacheDir := fs.String("cache-dir", "", "libcni cache dir (default /var/lib/cni)")
	timeout := fs.Duration("timeout", 2*time.Minute, "deadline for the whole operation")
	if err := fs.Parse(os.Args[2:]); err != nil {
		usage(err.Error())
	}
	if fs.NArg() != 0 {
		usage(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if *conflist == "" {
		usage("--conflist is required")
	}

	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fail(err)
	}
	if verb == "load" {
		types := make([]string, 0, len(list.Plugins))
		for _, p := range list.Plugins {
			types = append(types, p.Network.Type)
		}
		out, _ := json.Marshal(map[string]interface{}{
			"name":         list.Name,
			"cniVersion":   list.CNIVersion,
			"disableCheck": list.DisableCheck,
			"plugins":      types,
		})
		fmt.Println(string(out))
		return
	}

	if *containerID == "" {
		usage("--container-id is required")
	}
	pairs, err := parseArgs(*cniArgs)
	if err != nil {
		usage(err.Error())
	}
	caps := map[string]interface{}{}
	dec := json.NewDecoder(bytes.NewReader([]byte(*capArgs)))
	dec.UseNumber() // keep 4294967295 and friends exact
	if err := dec.Decode(&caps); err != nil {
		usage(fmt.Sprintf("--cap-args must be a JSON object: %v", err))
	}
	var dirs []string
	for _, d := range filepath.SplitList(*cniPath) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}

	cni := libcni.NewCNIConfigWithCacheDir(dirs, *cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    *containerID,
		NetNS:          *netns,
		IfName:         *ifname,
		Args:           pairs,
		CapabilityArgs: caps,
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		out, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			fail(err)
		}
		fmt.Println(string(out))
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	default:
		usage(fmt.Sprintf("unknown verb %q", verb))
	}
}
