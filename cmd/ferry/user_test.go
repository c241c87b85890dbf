package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
)

// The tests in this file are what a new user ran into (issue 9, "What a
// new user ran into"), each played with the built binaries.

// TestE2EInviteReused: a second use of an invite looked accepted (add
// printed the name and exited 0). Now the late invitee's add hears the
// inviter's refusal and says so, and the inviter's read prints a notice
// marked as Ferry's.
func TestE2EInviteReused(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob, carol := newUser(t, r, "alice"), newUser(t, r, "bob"), newUser(t, r, "carol")
	inv := strings.TrimSpace(alice.must("invite"))
	bob.must("add", "--wait", "0", inv)
	alice.must("read")
	// alice stays online, so her Ferry answers carol at once.
	stop := alice.start("read", "--wait", "30s")
	_, errs, code := carol.run("", "add", "--wait", "20s", inv)
	aliceOut := stop("someone else")
	if code != exitFail || !strings.Contains(errs, "someone else had already used the invite") || !strings.Contains(errs, "ask alice for a new invite") {
		t.Fatalf("carol's add of a used invite: exit %d, %q; want 1 and the refusal", code, errs)
	}
	if got := alice.must("contacts"); strings.TrimSpace(got) != "bob" {
		t.Fatalf("alice's contacts: %q", got)
	}
	if out := aliceOut; !strings.Contains(out, `[ferry] someone else (calling themselves "carol") also used the invite link that bob used`) {
		t.Fatalf("alice's read printed %q, want a Ferry notice about carol", out)
	}
	if _, errs, code := carol.run("", "send", "alice", "hello?"); code != exitFail || !strings.Contains(errs, "refused you as a contact") {
		t.Fatalf("carol sends to the refusing alice: exit %d, %q", code, errs)
	}
}

// TestE2EAddConfirmed: with the inviter online, add says the contact is
// confirmed; the inviter is told of the new contact.
func TestE2EAddConfirmed(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	inv := strings.TrimSpace(alice.must("invite"))
	stop := alice.start("read", "--wait", "30s", "--json")
	out, errs, code := bob.run("", "add", "--wait", "20s", inv)
	aliceOut := stop("bob accepted your invite")
	if code != 0 || strings.TrimSpace(out) != "alice" || !strings.Contains(errs, "alice's Ferry confirmed") {
		t.Fatalf("add: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	var m jsonMessage
	first, _, _ := strings.Cut(aliceOut, "\n")
	if err := json.Unmarshal([]byte(first), &m); err != nil || m.Kind != "notice" ||
		m.From != "" || !strings.HasPrefix(m.Text, "bob accepted your invite") {
		t.Fatalf("alice was told %q (%v)", aliceOut, err)
	}
}

// TestE2ERelayCauses: a wrong relay key and a path that resets the
// connection each reach the user as one sentence naming the cause,
// without a debug flag (both used to say only "check your network").
func TestE2ERelayCauses(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	l, err := link.ParseRelay(r.link)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := l
	wrongKey.Key[0] ^= 1
	// A censor on the path that resets everything but a browser's TLS.
	censorBin := censorBinary(t)
	censorAddr := freeAddr(t)
	cen := exec.Command(censorBin, "--listen", censorAddr, "--upstream", r.addr, "--policy", "tls-gate")
	if err := cen.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cen.Process.Kill(); cen.Wait() })
	waitListening(t, censorAddr)
	censored := l
	censored.Endpoints = []link.Endpoint{{Transport: "tcp", Addr: censorAddr}}
	for _, tt := range []struct {
		name, link, want string
	}{
		{"wrong key", wrongKey.String(), "refused the handshake: the relay key in the link is wrong, or the relay runs another version of Ferry"},
		{"reset on the path", censored.String(), "was reset on the way: something on the network path is blocking it"},
	} {
		bin, _ := binaries(t)
		u := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), "u"), name: "u"}
		_, errs, code := u.run("", "init", "--relay", tt.link, "--name", "u")
		if code != exitUnreachable || !strings.Contains(errs, tt.want) || strings.Count(strings.TrimSpace(errs), "\n") > 1 {
			t.Errorf("%s: exit %d, %q; want 3 and %q", tt.name, code, errs, tt.want)
		}
	}
}

// TestE2EHelp: every command's --help prints its flags and exits 0 (it
// printed "flag: help requested"); help COMMAND does too; --version
// prints the version.
func TestE2EHelp(t *testing.T) {
	t.Parallel()
	bin, _ := binaries(t)
	u := &user{t: t, bin: bin, home: t.TempDir(), name: "u"}
	for _, c := range commands() {
		out, errs, code := u.run("", c.name, "--help")
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: ferry "+c.name) || !strings.Contains(out, "-home") {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", c.name, code, out, errs)
		}
		if again, _, code := u.run("", "help", c.name); code != 0 || again != out {
			t.Errorf("help %s: exit %d, %q", c.name, code, again)
		}
	}
	if out, _, code := u.run("", "send", "--help"); code != 0 || !strings.Contains(out, "-lines") {
		t.Errorf("send --help does not list --lines: %q", out)
	}
	if out, _, code := u.run("", "--version"); code != 0 || !strings.HasPrefix(out, "ferry ") || !strings.Contains(out, "(protocol 1)") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// TestE2EReadShowsText: emoji joined by zero-width joiners print as they
// are, and a text of several lines as indented lines (they printed as
// escapes); an empty message is refused.
func TestE2EReadShowsText(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	family := "👩\u200d👩\u200d👧 at home"
	bob.must("send", "alice", family)
	bob.must("send", "alice", "line one\nline two")
	out := alice.must("read")
	if !strings.Contains(out, "bob: "+family+"\n") {
		t.Errorf("read printed %q, want the family emoji as is", out)
	}
	if !strings.Contains(out, "bob: line one\n                      line two\n") {
		t.Errorf("read printed %q, want the second line indented below the first", out)
	}
	for _, empty := range []string{"", "  "} {
		if _, errs, code := bob.run("", "send", "alice", empty); code != exitUsage || !strings.Contains(errs, "the message is empty") {
			t.Errorf("send %q: exit %d, %q", empty, code, errs)
		}
	}
}

// TestE2EInviteUnreachable: invite says so, with exit 3, when the relay
// cannot be reached (it exited 0).
func TestE2EInviteUnreachable(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice := newUser(t, r, "alice")
	r.kill()
	out, errs, code := alice.run("", "invite")
	if code != exitUnreachable || !strings.HasPrefix(out, "ferry://invite?") || !strings.Contains(errs, "nothing answers at") {
		t.Fatalf("invite with the relay down: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestE2EProfileCommands: rename, block and remove a contact, change the
// passphrase, back the profile up and restore it elsewhere (none of which
// a new user could do).
func TestE2EProfileCommands(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	alice.must("contact", "rename", "bob", "Bob S")
	alice.must("contact", "block", "Bob S")
	if got := alice.must("contacts", "--long"); !strings.HasPrefix(got, "Bob S\tconfirmed,blocked\t") {
		t.Fatalf("contacts --long: %q", got)
	}
	alice.must("contact", "unblock", "Bob S")
	bob.must("send", "alice", "still there")
	if out := alice.must("read"); !strings.Contains(out, "Bob S: still there") {
		t.Fatalf("alice read %q", out)
	}
	dir := t.TempDir()
	pass, bkpass := filepath.Join(dir, "pass"), filepath.Join(dir, "bkpass")
	os.WriteFile(pass, []byte("new words\n"), 0o600)
	os.WriteFile(bkpass, []byte("backup words\n"), 0o600)
	alice.must("passphrase", "--new-file", pass)
	if _, errs, code := alice.run("", "contacts"); code != exitFail || !strings.Contains(errs, "passphrase") {
		t.Fatalf("after the change, without the passphrase: exit %d, %q", code, errs)
	}
	backup := filepath.Join(dir, "alice.backup")
	alice.must("--passphrase-file", pass, "backup", "--backup-passphrase-file", bkpass, backup)
	moved := &user{t: t, bin: alice.bin, home: filepath.Join(dir, "new-machine"), name: "alice"}
	if _, errs, code := moved.run("", "restore", backup); code != exitUsage || !strings.Contains(errs, "backup-passphrase-file") {
		t.Fatalf("restore without the backup's passphrase: exit %d, %q", code, errs)
	}
	moved.must("restore", "--backup-passphrase-file", bkpass, backup)
	if got := strings.TrimSpace(moved.must("contacts")); got != "Bob S" {
		t.Fatalf("the restored profile's contacts: %q", got)
	}
	moved.must("send", "Bob S", "from the new machine")
	if out := bob.must("read"); !strings.Contains(out, "alice: from the new machine") {
		t.Fatalf("bob read %q", out)
	}
	moved.must("contact", "remove", "Bob S")
	if got := moved.must("contacts"); got != "" {
		t.Fatalf("contacts after remove: %q", got)
	}
}

// TestE2ETransportFlag: --transport restricts the transports; an unknown
// one, or one the relay does not offer, is a one-sentence error.
func TestE2ETransportFlag(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice := newUser(t, r, "alice")
	alice.must("--transport", "tcp", "contacts")
	if _, errs, code := alice.run("", "--transport", "pigeon", "contacts"); code != exitFail ||
		strings.TrimSpace(errs) != `ferry: unknown transport "pigeon": this Ferry has https, obfs, tcp.` {
		t.Fatalf("--transport pigeon: exit %d, %q", code, errs)
	}
	if _, errs, code := alice.run("", "--transport", "https", "--transport", "obfs", "contacts"); code != exitFail ||
		strings.TrimSpace(errs) != `ferry: your relay's link offers tcp, not https, obfs.` {
		t.Fatalf("--transport https --transport obfs: exit %d, %q", code, errs)
	}
}

// start runs a ferry command of u in the background; the function it
// returns kills the command and returns what it printed on stdout.
func (u *user) start(args ...string) (stop func(until string) string) {
	u.t.Helper()
	cmd := exec.Command(u.bin, append([]string{"--home", u.home}, args...)...)
	cmd.Env = filterEnv(os.Environ(), "FERRY_PASSPHRASE")
	out := &lockedBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	// What the command prints can come a moment after what another
	// command saw it do (a notice printed after the answer it sent): stop
	// waits up to 20 s for until to appear before it kills the command.
	return func(until string) string {
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), until) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		return out.String()
	}
}
