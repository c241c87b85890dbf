package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ferry-im/ferry"
)

// sendFile sends one attachment (a file, a voice note, or a voice note
// recorded now) to the conversation named to, with a progress bar.
func sendFile(e *env, c *ferry.Client, to, file, voicePath string, record time.Duration) error {
	conv, err := findConversation(e, c, to)
	if err != nil {
		return err
	}
	opts := ferry.SendFileOptions{}
	path := file
	switch {
	case record > 0:
		p, cleanup, err := recordVoice(e, record)
		if err != nil {
			return err
		}
		defer cleanup()
		path, opts.Voice, opts.Name = p, true, "voice note.ogg"
	case voicePath != "":
		path, opts.Voice = voicePath, true
	}
	bar := newBar(e, "sending "+filepath.Base(path))
	opts.Progress = func(p ferry.Progress) { bar(p.Done, p.Total) }
	_, err = c.SendFile(e.ctx, conv.ID, path, opts)
	bar(-1, 0)
	return err
}

// findConversation finds the conversation named to, learning new
// contacts first if there is none by that name.
func findConversation(e *env, c *ferry.Client, to string) (ferry.Conversation, error) {
	conv, err := c.FindConversation(e.ctx, to)
	if errors.Is(err, ferry.ErrUnknownContact) {
		// An invitee may have just accepted: learn new contacts, retry.
		if serr := c.Sync(e.ctx, ferry.SyncOptions{}); serr == nil {
			conv, err = c.FindConversation(e.ctx, to)
		}
	}
	if errors.Is(err, ferry.ErrUnknownContact) {
		return conv, fmt.Errorf("no contact or group named %q (ferry contacts and ferry group list show them)", to)
	}
	return conv, err
}

// newBar returns a function that draws a progress bar with the rate and
// the time left on stderr for a transfer that has been going for more
// than a second; done < 0 ends it.
func newBar(e *env, label string) func(done, total int64) {
	start := time.Now()
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
		switch {
		case done < 0:
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(e.stderr)
			}
		case bar == nil && time.Since(start) > time.Second && done < total:
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription(label),
				progressbar.OptionShowBytes(true), progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond),
				progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionUseANSICodes(false))
			fallthrough
		case bar != nil:
			bar.Set64(done)
		}
	}
}

// transferBars draws a progress bar for each upload or download a Sync
// does that takes more than a second.
func transferBars(e *env) func(ferry.Progress) {
	bars := make(map[[16]byte]func(done, total int64))
	return func(p ferry.Progress) {
		bar := bars[p.Message]
		if bar == nil {
			verb := "downloading"
			if p.Outgoing {
				verb = "uploading"
			}
			bar = newBar(e, verb+" "+hex.EncodeToString(p.Message[:4]))
			bars[p.Message] = bar
		}
		bar(p.Done, p.Total)
		if p.Done >= p.Total {
			bar(-1, 0)
			delete(bars, p.Message)
		}
	}
}

// recordVoice records d of audio from the default input with what the
// system has (ffmpeg, or arecord and opusenc) into a temporary Ogg Opus
// file.
func recordVoice(e *env, d time.Duration) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "ferry-voice-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	out := filepath.Join(dir, "voice.ogg")
	secs := strconv.FormatFloat(d.Seconds(), 'f', 1, 64)
	ctx, cancel := context.WithTimeout(e.ctx, d+30*time.Second)
	defer cancel()
	fmt.Fprintf(e.stderr, "ferry: recording %s from the default microphone...\n", d)
	var cmds [][]string
	if ff, err := exec.LookPath("ffmpeg"); err == nil {
		cmds = [][]string{{ff, "-hide_banner", "-loglevel", "error", "-f", "alsa", "-i", "default", "-t", secs, "-ac", "1", "-c:a", "libopus", "-b:a", "24k", out}}
	} else if ar, err := exec.LookPath("arecord"); err == nil {
		enc, err := exec.LookPath("opusenc")
		if err != nil {
			cleanup()
			return "", nil, errors.New("recording with arecord needs opusenc too (Debian: apt install opus-tools); or give a file with --voice PATH")
		}
		wav := filepath.Join(dir, "voice.wav")
		cmds = [][]string{{ar, "-q", "-f", "S16_LE", "-r", "48000", "-c", "1", "-d", strconv.Itoa(int(d.Round(time.Second).Seconds())), wav}, {enc, "--quiet", "--bitrate", "24", wav, out}}
	} else {
		cleanup()
		return "", nil, errors.New("recording needs ffmpeg, or arecord with opusenc; install one, or give a recorded file with --voice PATH")
	}
	for _, args := range cmds {
		if b, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("recording failed (%s: %s)", filepath.Base(args[0]), strings.TrimSpace(firstLine(string(b))))
		}
	}
	return out, cleanup, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func cmdSave(e *env, args []string) error {
	fs := e.flags("save")
	return e.with(fs, args, 2, func(c *ferry.Client, pos []string) error {
		id, err := messageID(pos[0])
		if err != nil {
			return err
		}
		bar := newBar(e, "downloading")
		p, err := c.Save(e.ctx, id, pos[1], func(p ferry.Progress) { bar(p.Done, p.Total) })
		bar(-1, 0)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, p)
		return nil
	})
}

// messageID parses a message id as ferry read --json prints it.
func messageID(s string) ([16]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return [16]byte{}, usageErr("%q is not a message id: ferry read --json shows them (32 hex digits)", s)
	}
	return [16]byte(b), nil
}

func cmdPlay(e *env, args []string) error {
	fs := e.flags("play")
	return e.with(fs, args, 1, func(c *ferry.Client, pos []string) error {
		id, err := messageID(pos[0])
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "ferry-play-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		p, err := c.Save(e.ctx, id, dir, nil)
		if err != nil {
			return err
		}
		player, args := findPlayer()
		if player == "" {
			return fmt.Errorf("no audio player found (ffplay, mpv or cvlc); the note is saved with: ferry save %s PATH", pos[0])
		}
		cmd := exec.CommandContext(e.ctx, player, append(args, p)...)
		cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
		return cmd.Run()
	})
}

// findPlayer looks for an audio player on the system.
func findPlayer() (string, []string) {
	for _, p := range []struct {
		name string
		args []string
	}{
		{"ffplay", []string{"-nodisp", "-autoexit", "-loglevel", "error"}},
		{"mpv", []string{"--no-video", "--really-quiet"}},
		{"cvlc", []string{"--play-and-exit", "--quiet"}},
	} {
		if path, err := exec.LookPath(p.name); err == nil {
			return path, p.args
		}
	}
	return "", nil
}

func cmdSet(e *env, args []string) error {
	fs := e.flags("set")
	return e.with(fs, args, 2, func(c *ferry.Client, pos []string) error {
		if pos[0] != "auto-download" {
			return usageErr("usage: ferry set auto-download SIZE (for example 100MB, 2GB, 0 or default)")
		}
		n, err := parseSize(pos[1])
		if err != nil {
			return err
		}
		return c.SetAutoDownload(e.ctx, n)
	})
}

// parseSize parses "100MB", "1.5GB", "500KB", "0" or "default" (-1).
func parseSize(s string) (int64, error) {
	if s == "default" {
		return -1, nil
	}
	units := []struct {
		suffix string
		n      float64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}, {"", 1}}
	up := strings.ToUpper(strings.TrimSpace(s))
	for _, u := range units {
		if num, ok := strings.CutSuffix(up, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v < 0 {
				break
			}
			return int64(v * u.n), nil
		}
	}
	return 0, usageErr("%q is not a size: write it like 100MB, 2GB, 0 or default", s)
}
