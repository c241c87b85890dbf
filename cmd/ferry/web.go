package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"github.com/ferry-im/ferry/internal/web"
)

// cmdWeb serves the Ferry app on loopback and opens it in the browser
// (docs/app.md). It prints the app's address, with the run's token, on the
// first line of stdout, and serves until interrupted.
func cmdWeb(e *env, args []string) error {
	fs := e.flags("web")
	listen := fs.String("listen", "127.0.0.1:0", "serve on `ADDR`, a loopback address (default: a random port)")
	noBrowser := fs.Bool("no-browser", false, "do not open the browser; just print the address")
	relay := fs.String("relay", "", "suggest the relay `LINK` when creating a profile")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usageErr("--listen %q: give a loopback address and port, such as 127.0.0.1:8080", *listen)
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usageErr("--listen %q: the app listens on this device only (127.0.0.1, ::1 or localhost)", *listen)
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	srv, err := web.New(e.ctx, web.Config{Profile: cfg, Relay: *relay, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %v", *listen, err)
	}
	defer l.Close()
	url := srv.URL(l.Addr())
	fmt.Fprintln(e.stdout, url)
	fmt.Fprintln(e.stderr, "ferry: the app is open at the address above until you press Ctrl-C; keep the address to yourself (it holds this run's key).")
	var wg sync.WaitGroup
	defer wg.Wait()
	if !*noBrowser {
		wg.Add(1)
		go func() {
			defer wg.Done()
			openBrowser(e.ctx, url)
		}()
	}
	return srv.Serve(e.ctx, l)
}

// openBrowser opens url in the system's browser, best effort.
func openBrowser(ctx context.Context, url string) {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", url)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.CommandContext(ctx, "xdg-open", url)
	}
	cmd.Run()
}
