package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ferry-im/ferry/censor/censortest"
)

// The app's browser tests: each profile runs its own ferry web, and real
// headless Chromium (one browser, a tab per profile) uses the app as a
// person would, on one relay. docs/app.md lists what they cover and shows
// the screenshots they take.

var screenshots = flag.String("screenshots", "", "also save the app tests' screenshots in `DIR` (docs/app refreshes the documentation's)")

// browser is headless Chromium for one test.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func startBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	path := censortest.ChromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")),
		chromedp.WindowSize(1200, 800),
	}
	opts = append(opts, extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", censortest.ChromiumVersion(path), err)
	}
	t.Logf("browser: %s", censortest.ChromiumVersion(path))
	return &browser{t: t, ctx: ctx}
}

// app is one profile's ferry web and the browser tab showing it.
type app struct {
	t    *testing.T
	name string
	u    *user
	tab  context.Context
	url  string
	cmd  *exec.Cmd
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startApp runs ferry web for u (whose profile may not exist yet) and
// opens it in a new tab of b.
func (b *browser) startApp(u *user, relayLink string) *app {
	t := b.t
	t.Helper()
	a := &app{t: t, name: u.name, u: u, logs: &lockedBuffer{}}
	a.cmd = exec.Command(u.bin, "--home", u.home, "web", "--no-browser", "--relay", relayLink)
	a.cmd.Env = append(filterEnv(os.Environ(), "FERRY_PASSPHRASE"), "FERRY_LOG=info")
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stderr = a.logs
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: ferry web printed no address: %v\n%s", u.name, err, a.logs.String())
	}
	a.url = strings.TrimSpace(line)
	if !strings.HasPrefix(a.url, "http://127.0.0.1:") || !strings.Contains(a.url, "/?t=") {
		t.Fatalf("%s: ferry web's first line is %q", u.name, a.url)
	}
	tab, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	// The first Run opens the tab, which lives as long as the context of
	// that Run: give it the tab's own, without a timeout.
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	a.tab = tab
	a.do(chromedp.Navigate(a.url))
	// The token URL redirects to /, which loads the app.
	a.until(30*time.Second, "the app's page", `document.readyState === 'complete' && location.pathname === '/'`)
	return a
}

// inPage runs f, and again for as long as ctx allows while it fails
// because chromedp named an execution context the page no longer has.
// chromedp tells a Navigate that the page loaded before it has taken in
// the new document's execution context, so an evaluation right after one
// can name the old document's: Chromium answers "Cannot find context with
// specified id" and runs nothing, so running it again is safe. A poll,
// which only reads, is run again too when its context is destroyed under
// it ("Execution context was destroyed").
func inPage(ctx context.Context, poll bool, f func() error) error {
	for {
		err := f()
		if err == nil || !staleContext(err, poll) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func staleContext(err error, poll bool) bool {
	var ce *cdproto.Error
	if !errors.As(err, &ce) || ce.Code != -32000 {
		return false
	}
	return strings.HasPrefix(ce.Message, "Cannot find context with specified id") ||
		(poll && strings.HasPrefix(ce.Message, "Execution context was destroyed"))
}

func (a *app) stop() {
	if a.cmd.Process != nil && a.cmd.ProcessState == nil {
		a.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.cmd.Process.Kill()
			<-done
		}
	}
}

// do runs actions in a's tab, failing the test after 30 s.
func (a *app) do(actions ...chromedp.Action[chromedp.Void]) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.tab, 30*time.Second)
	defer cancel()
	if err := inPage(ctx, false, func() error { return chromedp.Do(ctx, actions...) }); err != nil {
		a.fail("%v", err)
	}
}

func (a *app) fail(format string, args ...any) {
	a.t.Helper()
	a.shot("failure-" + a.name)
	a.t.Fatalf("%s: %s\nferry web's log:\n%s", a.name, fmt.Sprintf(format, args...), lastLines(a.logs.String(), 30))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// eval evaluates a JavaScript expression in a's tab.
func eval[T any](a *app, expr string) T {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.tab, 30*time.Second)
	defer cancel()
	var v T
	err := inPage(ctx, false, func() (err error) {
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
		return err
	})
	if err != nil {
		a.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits (up to d) for a JavaScript condition to hold in a's tab.
func (a *app) until(d time.Duration, what, cond string) {
	a.t.Helper()
	if err := a.poll(d, cond); err != nil {
		a.fail("waiting for %s: %v", what, err)
	}
}

// holdsWithin reports whether a JavaScript condition holds in a's tab within d.
func holdsWithin(a *app, d time.Duration, cond string) bool {
	return a.poll(d, cond) == nil
}

// poll waits up to d for a JavaScript condition to hold in a's tab.
func (a *app) poll(d time.Duration, cond string) error {
	deadline := time.Now().Add(d)
	ctx, cancel := context.WithTimeout(a.tab, d+5*time.Second)
	defer cancel()
	return inPage(ctx, true, func() error {
		left := max(time.Until(deadline), 100*time.Millisecond)
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(left)))
		return err
	})
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// messageWith is a JavaScript expression: the message element whose text
// includes text, or null.
func messageWith(text string) string {
	return `[...document.querySelectorAll('#messages .msg')].find((m) => m.querySelector('.text')?.textContent.includes(` + js(text) + `))`
}

// waitMessage waits until the open conversation shows a message with text.
func (a *app) waitMessage(text string) {
	a.t.Helper()
	a.until(20*time.Second, "the message "+js(text), messageWith(text))
}

// click clicks the element a CSS selector finds. The app re-renders a
// list when an event comes (a message, a transfer's progress), so the node
// found can be replaced before the click reaches it: Chromium then says
// it cannot find the node and nothing was clicked, and the click is tried
// again on the new one.
func (a *app) click(sel string) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.tab, 30*time.Second)
	defer cancel()
	for {
		err := inPage(ctx, false, func() error {
			return chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
		})
		var ce *cdproto.Error
		if err == nil || !errors.As(err, &ce) || ce.Code != -32000 || !strings.Contains(strings.ToLower(ce.Message), "node") || ctx.Err() != nil {
			if err != nil {
				a.fail("click %s: %v", sel, err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// type_ types text into the composer and presses Enter.
func (a *app) send(text string) {
	a.t.Helper()
	a.front()
	a.typeText("#composer-text", text)
	if got := eval[string](a, `document.activeElement.id + ':' + document.querySelector('#composer-text').value`); got != "composer-text:"+text {
		a.t.Logf("focus %v, dialogs open %v", eval[bool](a, `document.hasFocus()`), eval[string](a, `[...document.querySelectorAll('dialog')].filter((d) => d.open).map((d) => d.id).join()`))
		a.fail("typed into the message box, got %q", got)
	}
	a.enter()
	a.waitMessage(text)
}

// typeText focuses the element sel finds and types text into it, as a
// keyboard or an input method does (Input.insertText).
func (a *app) typeText(sel, text string) {
	a.t.Helper()
	a.front()
	a.do(chromedp.Focus(chromedp.CSS(sel)))
	if _, err := chromedp.Call(a.tab, input.InsertText, input.InsertTextParams{Text: text}); err != nil {
		a.fail("type: %v", err)
	}
}

// setValue sets the value of the form field sel finds and tells the page
// (input and change events).
func (a *app) setValue(sel, v string) {
	a.t.Helper()
	eval[chromedp.Void](a, `(() => { const e = document.querySelector(`+js(sel)+`); e.value = `+js(v)+`;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); })()`)
}

// front brings a's tab to the front: keys typed go to the tab in front.
func (a *app) front() {
	a.t.Helper()
	if _, err := chromedp.Call(a.tab, page.BringToFront, cdp.Empty{}); err != nil {
		a.fail("bring the tab to the front: %v", err)
	}
}

// enter presses Enter as a keyboard does: one keyDown carrying the text
// (so that the page's preventDefault suppresses the new line, as it does
// for a person; chromedp.KeyEvent sends the character as a separate event
// that nothing can prevent) and a keyUp.
func (a *app) enter() {
	a.t.Helper()
	a.front()
	for _, p := range []input.DispatchKeyEventParams{
		{Type: input.DispatchKeyEventTypeKeyDown, Key: "Enter", Code: "Enter", Text: "\r", UnmodifiedText: "\r", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13},
		{Type: input.DispatchKeyEventTypeKeyUp, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13},
	} {
		if _, err := chromedp.Call(a.tab, input.DispatchKeyEvent, p); err != nil {
			a.fail("press Enter: %v", err)
		}
	}
}

// openConversation opens the conversation named name from the list.
func (a *app) openConversation(name string) {
	a.t.Helper()
	sel := `[...document.querySelectorAll('#conversations button')].find((b) => b.querySelector('.name').textContent === ` + js(name) + `)`
	a.until(20*time.Second, "the conversation with "+name, sel)
	eval[chromedp.Void](a, sel+`.click()`)
	a.until(10*time.Second, "the conversation to open", `document.querySelector('#conv-title').textContent === `+js(name))
}

// messageTool clicks a tool button (reply, react, edit, delete) of the
// message with text.
func (a *app) messageTool(text, tool string) {
	a.t.Helper()
	a.waitMessage(text)
	eval[chromedp.Void](a, messageWith(text)+`.querySelector('[data-key^="`+tool+`:"]').click()`)
}

// shot saves a screenshot of a's tab as name.png (in the test's
// directory, and in -screenshots DIR if given).
func (a *app) shot(name string) {
	ctx, cancel := context.WithTimeout(a.tab, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		a.t.Logf("screenshot %s: %v", name, err)
		return
	}
	dirs := []string{a.t.TempDir()}
	if *screenshots != "" {
		dirs = append(dirs, *screenshots)
	}
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			a.t.Errorf("save screenshot: %v", err)
		}
	}
}

// axe runs axe-core (vendored, testdata/axe) on the page and fails on any
// serious or critical violation.
func (a *app) axe(view string) {
	a.t.Helper()
	if eval[bool](a, `typeof axe === 'undefined'`) {
		src, err := os.ReadFile("testdata/axe/axe.min.js")
		if err != nil {
			a.t.Fatal(err)
		}
		eval[chromedp.Void](a, string(src)+"\n;0")
	}
	type violation struct {
		ID, Impact, Help string
		Nodes            []struct{ Target []string }
	}
	vs := eval[[]violation](a, `axe.run(document, {resultTypes: ['violations']}).then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => ({target: n.target}))})))`)
	for _, v := range vs {
		a.t.Logf("%s, %s: axe %s (%s): %s %v", a.name, view, v.ID, v.Impact, v.Help, v.Nodes)
		if v.Impact == "serious" || v.Impact == "critical" {
			a.t.Errorf("%s, %s: accessibility violation %s (%s): %s at %v", a.name, view, v.ID, v.Impact, v.Help, v.Nodes)
		}
	}
}

// readUntil runs ferry read for u until it prints text (the sender's
// outbox may be retrying a refused connection), for up to 20 s.
func readUntil(t *testing.T, u *user, text string) {
	t.Helper()
	var all string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		all += u.must("read")
		if strings.Contains(all, text) {
			return
		}
	}
	t.Errorf("%s read %q, not %q", u.name, all, text)
}

// bareUser is a user without a profile: the app's onboarding makes it.
func bareUser(t *testing.T, name string) *user {
	bin, _ := binaries(t)
	return &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), strings.ToLower(name)), name: name}
}

// onboard creates a's profile in the app and returns the invite link the
// app then shows.
func (a *app) onboard(relayLink string) string {
	a.t.Helper()
	a.do(chromedp.WaitVisible(chromedp.CSS("#onboarding-name")))
	if got := eval[string](a, `document.querySelector('#onboarding-relay').value`); got != relayLink {
		a.fail("the onboarding suggests the relay %q, want %q", got, relayLink)
	}
	a.do(chromedp.SendKeys(chromedp.CSS("#onboarding-name"), a.name))
	a.shot("onboarding")
	a.axe("onboarding")
	a.click(`#onboarding-form button[type=submit]`)
	a.until(20*time.Second, "the invite", `document.querySelector('#invite-dialog').open && document.querySelector('#invite-link').value.startsWith('ferry://')`)
	return eval[string](a, `document.querySelector('#invite-link').value`)
}

// TestAppTwoProfiles plays the scenarios through the app in a
// real browser: onboarding, an invite by link, a conversation both ways
// with receipts, a reply, a reaction, an edit and a delete seen on the
// other side, typing, a disappearing message gone on both sides after its
// timer, the CLI on a profile the app has open, notifications, and the
// relay banner when the relay stops and again when it returns.
func TestAppTwoProfiles(t *testing.T) {
	relay := startRelay(t)
	b := startBrowser(t)
	alice := b.startApp(bareUser(t, "Alice"), relay.link)
	bob := b.startApp(bareUser(t, "Bob"), relay.link)

	// Onboarding; Alice's invite is shown at once, as a QR code and a link.
	link := alice.onboard(relay.link)
	if n := eval[int](alice, `document.querySelectorAll('#invite-qr svg path').length`); n != 1 {
		alice.fail("no QR code in the invite dialog")
	}
	alice.shot("invite")
	alice.axe("invite dialog")
	alice.click(`#invite-dialog button.close`)
	bob.onboard(relay.link)
	bob.click(`#invite-dialog button.close`)

	// Bob adds Alice by pasting her link; Alice learns of Bob.
	bob.click("#add-btn")
	bob.setValue("#add-link", link)
	bob.click(`#add-form button[type=submit]`)
	bob.until(20*time.Second, "the conversation with Alice", `document.querySelector('#conv-title').textContent === 'Alice'`)
	alice.openConversation("Bob")
	alice.waitMessage("Bob accepted your invite")

	// A conversation both ways, with delivery and read states.
	bob.send("Hello Alice, it works!")
	alice.waitMessage("Hello Alice, it works!")
	bob.until(20*time.Second, "Bob's message read", messageWith("Hello Alice")+`?.querySelector('.state-read')`)
	alice.messageTool("Hello Alice", "reply")
	alice.send("Hi Bob! Good to see you here.")
	bob.until(20*time.Second, "Alice's reply quoting Bob", messageWith("Hi Bob!")+`?.querySelector('.quote')?.textContent.includes('Hello Alice')`)

	// A reaction and an edit.
	alice.messageTool("Hello Alice", "react")
	alice.click(`#react-choices button[aria-label="React with 👍"]`)
	bob.until(20*time.Second, "Alice's reaction", messageWith("Hello Alice")+`?.querySelector('.reactions')?.textContent.includes('👍')`)
	bob.messageTool("Hello Alice", "edit")
	bob.setValue("#edit-text", "Hello Alice, it really works!")
	bob.click(`#edit-form button[type=submit]`)
	alice.until(20*time.Second, "Bob's edit", messageWith("it really works")+`?.querySelector('.meta').textContent.includes('edited')`)

	// A delete for everyone.
	bob.send("Oops, wrong conversation")
	alice.waitMessage("Oops, wrong conversation")
	bob.messageTool("Oops, wrong conversation", "delete")
	bob.click("#delete-confirm")
	alice.until(20*time.Second, "the delete", `!(`+messageWith("Oops")+`) && `+messageWith("this message was deleted"))
	bob.waitMessage("this message was deleted")

	// Typing.
	alice.typeText("#composer-text", "I am typ")
	bob.until(15*time.Second, "Alice is typing", `document.querySelector('#typing').textContent === 'Alice is typing…'`)
	alice.setValue("#composer-text", "")
	bob.shot("conversation")
	bob.axe("conversation")

	testAppDisappearing(t, alice, bob)
	testAppSharedProfile(t, alice, bob)
	testAppNotification(t, alice, bob)
	testAppBanner(t, relay, alice, bob)
}

// testAppDisappearing: Alice turns on a 10-second timer; her next
// message disappears from both sides after it.
func testAppDisappearing(t *testing.T, alice, bob *app) {
	alice.setValue("#timer", "10")
	bob.waitMessage("disappearing messages set to 10 seconds")
	bob.until(10*time.Second, "Bob's timer", `document.querySelector('#timer').value === '10'`)
	alice.send("This one disappears")
	bob.waitMessage("This one disappears")
	sent := time.Now()
	bob.shot("disappearing")
	for _, a := range []*app{alice, bob} {
		a.until(30*time.Second, "the message to disappear", `!(`+messageWith("This one disappears")+`)`)
	}
	if took := time.Since(sent); took < 9*time.Second {
		t.Errorf("the message disappeared after %v, before its 10-second timer", took)
	}
	alice.setValue("#timer", "0")
	bob.waitMessage("disappearing messages turned off")
	alice.waitMessage("Hello Alice, it really works!")
}

// testAppSharedProfile: the command line uses Alice's profile while her
// app has it open; the app shows what it sent.
func testAppSharedProfile(t *testing.T, alice, bob *app) {
	alice.u.must("send", "Bob", "Sent from the terminal")
	bob.waitMessage("Sent from the terminal")
	alice.waitMessage("Sent from the terminal")
	out := alice.u.must("read", "--all", "--json")
	if !strings.Contains(out, "Hello Alice, it really works!") {
		t.Errorf("ferry read beside the app: %s", out)
	}
}

// testAppNotification: a message to a tab in the background becomes a
// notification (the page's Notification is recorded: headless Chromium
// shows none).
func testAppNotification(t *testing.T, alice, bob *app) {
	eval[chromedp.Void](alice, `(() => {
		window.shown = [];
		window.Notification = class { constructor(title, opts) { window.shown.push({title, body: opts.body}); } static get permission() { return 'granted'; } };
		Object.defineProperty(document, 'hidden', {get: () => true, configurable: true});
	})()`)
	bob.send("Are you there?")
	alice.until(20*time.Second, "a notification", `window.shown.some((n) => n.title === 'Bob' && n.body === 'Are you there?')`)
	eval[chromedp.Void](alice, `delete document.hidden`)
}

// testAppBanner: the relay stops; both apps say so in plain words, with
// what Ferry is doing; it returns; the banners go, and a message written
// meanwhile arrives.
func testAppBanner(t *testing.T, relay *relayProc, alice, bob *app) {
	relay.kill()
	for _, a := range []*app{alice, bob} {
		a.until(20*time.Second, "the relay banner", `!document.querySelector('#banner').hidden && document.querySelector('#banner-text').textContent.includes('Ferry cannot reach your relay')`)
	}
	// The first word is of the lost connection; the next attempt's names
	// the cause.
	bob.until(20*time.Second, "the cause in the banner", `document.querySelector('#banner-text').textContent.includes('Nothing answers at tcp')`)
	text := eval[string](bob, `document.querySelector('#banner-text').textContent`)
	for _, want := range []string{"Trying again", "over tcp", "waits on this device"} {
		if !strings.Contains(text, want) {
			t.Errorf("the banner says %q; it lacks %q", text, want)
		}
	}
	bob.send("Written while the relay was down")
	bob.shot("relay-banner")
	bob.axe("relay banner")
	relay.start()
	for _, a := range []*app{alice, bob} {
		a.until(20*time.Second, "the banner to go", `document.querySelector('#banner').hidden`)
	}
	alice.waitMessage("Written while the relay was down")
}

// TestAppViews: the app with a keyboard alone, at 200% zoom and in dark
// mode, with its safety number, and what it refuses in the browser.
func TestAppViews(t *testing.T) {
	relay := startRelay(t)
	carol, dave := newUser(t, relay, "Carol"), newUser(t, relay, "Dave")
	connect(t, carol, dave)
	dave.must("send", "Carol", `<img src=x onerror="window.pwned=1"> hello`)
	b := startBrowser(t)
	c := b.startApp(carol, relay.link)
	c.until(20*time.Second, "the conversation list", `document.querySelectorAll('#conversations button').length === 1`)
	// The list shows the unread count and the last message.
	c.until(20*time.Second, "Dave's unread message in the list", `(() => { const b = document.querySelector('#conversations button');
		return b.querySelector('.badge')?.textContent.endsWith('1') && b.querySelector('.last').textContent.includes('hello'); })()`)

	// Keyboard alone: Tab to the conversation, Enter opens it (focus goes
	// to the message box), typing and Enter send.
	c.front()
	for i := 0; i < 12 && !eval[bool](c, `document.activeElement?.dataset?.conv !== undefined`); i++ {
		c.do(chromedp.KeyEvent("\t"))
	}
	if !eval[bool](c, `document.activeElement?.dataset?.conv !== undefined`) {
		c.fail("Tab never reached the conversation")
	}
	c.enter()
	c.until(10*time.Second, "the message box focused", `document.activeElement === document.querySelector('#composer-text')`)
	c.send("Sent with the keyboard alone")
	readUntil(t, dave, "Sent with the keyboard alone")

	// A contact's HTML is text, never markup.
	c.waitMessage("<img src=x")
	if eval[bool](c, `!!document.querySelector('#messages img') || window.pwned === 1`) {
		c.fail("a contact's message was parsed as HTML")
	}
	// The CSP blocks connections to anywhere else and inline scripts.
	if !eval[bool](c, `fetch('http://127.0.0.1:9/').then(() => false, () => true)`) {
		c.fail("the page could fetch another origin")
	}
	eval[chromedp.Void](c, `(() => { const s = document.createElement('script'); s.textContent = 'window.inline = 1'; document.body.append(s); })()`)
	if eval[bool](c, `window.inline === 1`) {
		c.fail("an inline script ran")
	}

	// The safety number, with its QR code, the same as the CLI's.
	c.click("#safety-btn")
	c.until(10*time.Second, "the safety number", `document.querySelector('#safety-number').textContent.length === 71`)
	num := eval[string](c, `document.querySelector('#safety-number').textContent`)
	if cli := dave.must("contacts", "--safety"); !strings.Contains(cli, num) {
		t.Errorf("the app's safety number %q is not Dave's %q", num, cli)
	}
	c.shot("safety-number")
	c.axe("safety number")
	c.do(chromedp.KeyEvent("\u001b"))
	c.until(5*time.Second, "Escape to close the dialog", `!document.querySelector('#safety-dialog').open`)

	// 200% zoom: the same window at twice the scale; nothing overflows.
	c.do(chromedp.EmulateViewport(600, 400, chromedp.EmulateScale(2)))
	c.until(5*time.Second, "the narrow layout", `!!document.querySelector('#back').offsetParent`)
	if eval[bool](c, `document.documentElement.scrollWidth > innerWidth + 1`) {
		c.fail("the page scrolls sideways at 200%% zoom")
	}
	c.shot("zoom-200")
	c.axe("200% zoom")
	c.click("#back")
	c.until(5*time.Second, "the list", `!!document.querySelector('#conversations').offsetParent`)
	c.do(chromedp.ResetViewport())

	// Dark mode follows the system.
	if _, err := chromedp.Call(c.tab, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	if !eval[bool](c, `(() => { const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number); return r + g + b < 150; })()`) {
		c.fail("dark mode did not darken the page")
	}
	c.openConversation("Dave")
	c.shot("dark")
	c.axe("dark mode")
}

// pngFile writes a small PNG photo for the tests to send.
func pngFile(t *testing.T) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 160, 120))
	for y := range 120 {
		for x := range 160 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y * 2), 140, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sunset.png")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAppMedia: a photo by the file picker and a file by drag and drop,
// each with progress to completion and shown on the other side (the photo
// as an image), a voice note recorded from Chromium's fake microphone and
// played back with its waveform, and a group of three made in the app, in
// which a member is removed and no longer gets the group's messages.
func TestAppMedia(t *testing.T) {
	relay := startRelay(t)
	alice, bob, carol := newUser(t, relay, "Alice"), newUser(t, relay, "Bob"), newUser(t, relay, "Carol")
	connect(t, alice, bob)
	connect(t, carol, alice)
	b := startBrowser(t)
	a := b.startApp(alice, relay.link)
	bb := b.startApp(bob, relay.link)
	a.openConversation("Bob")
	bb.openConversation("Alice")

	// A photo by the picker.
	a.do(chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{pngFile(t)}))
	a.until(30*time.Second, "the photo sent", `S.uploadsDone.some((u) => u.name === 'sunset.png' && u.value === 100)`)
	if !eval[bool](a, `S.progressLog.length > 0 && S.progressLog.every((v, i, l) => i === 0 || v >= l[i-1])`) {
		a.fail("no progress was shown on the way: %v", eval[[]int](a, `S.progressLog`))
	}
	photo := `[...document.querySelectorAll('#messages img.media')].some((i) => i.alt === 'Photo: sunset.png' && i.complete && i.naturalWidth === 160)`
	if !holdsWithin(bb, 20*time.Second, photo) {
		// The downloader tries a blob once per kick; if that try came too
		// early, the page offers the download, as a person would see it.
		t.Log("the photo did not download by itself within 20 s; using its Download button")
		bb.click(`#messages button[aria-label^="Download sunset.png"]`)
	}
	bb.until(30*time.Second, "the photo shown", photo)

	// A file by drag and drop, which Bob, who now downloads nothing by
	// itself, downloads with a click.
	bob.must("set", "auto-download", "0")
	eval[chromedp.Void](a, `(() => {
		const dt = new DataTransfer();
		dt.items.add(new File(['minutes of the meeting\n'], 'minutes.txt', {type: 'text/plain'}));
		document.querySelector('#conv').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
	})()`)
	a.until(30*time.Second, "the dropped file sent", `S.uploadsDone.some((u) => u.name === 'minutes.txt' && u.value === 100)`)
	bb.until(30*time.Second, "the dropped file offered", `!!document.querySelector('#messages button[aria-label^="Download minutes.txt"]')`)
	bb.click(`#messages button[aria-label^="Download minutes.txt"]`)
	bb.until(30*time.Second, "the dropped file downloaded", `[...document.querySelectorAll('#messages a[download]')].some((l) => l.download === 'minutes.txt')`)
	bob.must("set", "auto-download", "default")
	got := eval[string](bb, `fetch([...document.querySelectorAll('#messages a[download]')].find((l) => l.download === 'minutes.txt').href).then((r) => r.text())`)
	if got != "minutes of the meeting\n" {
		t.Errorf("the dropped file arrived as %q", got)
	}

	// A voice note from the fake microphone, played back with its waveform.
	a.click("#record-btn")
	a.until(10*time.Second, "recording", `document.querySelector('#record-btn').getAttribute('aria-pressed') === 'true'`)
	time.Sleep(2500 * time.Millisecond)
	a.click("#record-btn")
	a.until(30*time.Second, "the voice note sent", `S.uploadsDone.some((u) => u.name === 'voice note' && u.value === 100)`)
	bb.until(30*time.Second, "the voice note with its waveform", `(() => { const au = document.querySelector('#messages audio');
		return au && au.closest('.msg').querySelectorAll('svg.wave rect').length > 10; })()`)
	dur := eval[float64](bb, `new Promise((ok) => { const au = document.querySelector('#messages audio');
		if (au.readyState >= 1) ok(au.duration); else au.addEventListener('loadedmetadata', () => ok(au.duration)); })`)
	if dur < 1.5 || dur > 4 {
		t.Errorf("the voice note lasts %.2f s, want about 2.5", dur)
	}
	if !eval[bool](bb, `(() => { const au = document.querySelector('#messages audio'); au.muted = true;
		return au.play().then(() => new Promise((ok) => setTimeout(() => ok(au.currentTime > 0), 700)), () => false); })()`) {
		t.Error("the voice note does not play")
	}
	bb.shot("files-and-voice")
	bb.axe("files and voice")

	// A group of three; Carol is removed and hears no more.
	a.click("#group-btn")
	a.until(10*time.Second, "the new group dialog", `document.querySelector('#group-dialog').open && document.querySelectorAll('#group-contacts input').length === 2`)
	a.setValue("#group-name", "Family")
	eval[chromedp.Void](a, `document.querySelectorAll('#group-contacts input').forEach((i) => i.checked = true)`)
	a.click(`#group-form button[type=submit]`)
	a.until(30*time.Second, "the group open", `document.querySelector('#conv-title').textContent === 'Family'`)
	a.send("Hello family")
	bb.openConversation("Family")
	bb.waitMessage("Hello family")
	bb.messageTool("Hello family", "react")
	bb.click(`#react-choices button[aria-label="React with ❤️"]`)
	a.until(20*time.Second, "Bob's reaction in the group", messageWith("Hello family")+`?.querySelector('.reactions')?.textContent.includes('❤️')`)
	readUntil(t, carol, "Hello family")
	a.click("#members-btn")
	a.until(10*time.Second, "the members", `document.querySelector('#members-list').textContent.includes('Carol')`)
	a.shot("group-members")
	a.axe("group members")
	a.click(`#members-list button[aria-label="Remove Carol from the group"]`)
	a.until(20*time.Second, "Carol removed", `!document.querySelector('#members-list').textContent.includes('Carol')`)
	a.click(`#members-dialog button.close`)
	a.send("Only the two of us now")
	bb.waitMessage("Only the two of us now")
	bb.shot("group")
	time.Sleep(time.Second)
	if out := carol.must("read", "--all"); strings.Contains(out, "Only the two of us now") {
		t.Errorf("Carol, removed, read the group's next message: %s", out)
	}
	if out := carol.must("group", "list"); !strings.Contains(out, "Family") {
		t.Errorf("Carol's groups: %q", out)
	}
}
