package web

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/internal/webm"
)

// maxVoice bounds a recorded voice note's upload.
const maxVoice = 32 << 20

// sentDir, in the profile directory, keeps the files sent from the app:
// the page uploads a file's bytes, and the client sends (and later shows)
// a file by its path.
const sentDir = "sent"

// attachmentJSON describes an attachment to the page.
type attachmentJSON struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Size     int64  `json:"size"`
	Voice    bool   `json:"voice,omitempty"`
	Duration int64  `json:"duration,omitempty"` // milliseconds
	Waveform []int  `json:"waveform,omitempty"`
	Thumb    bool   `json:"thumb,omitempty"`
	Transfer string `json:"transfer"` // pending, done or failed
	Error    string `json:"error,omitempty"`
	Ready    bool   `json:"ready,omitempty"` // GET /api/file serves it
}

func toAttachment(a *ferry.Attachment) *attachmentJSON {
	out := &attachmentJSON{Name: a.Name, Type: a.Type, Size: a.Size, Voice: a.Voice, Duration: a.Duration.Milliseconds(),
		Thumb: len(a.Thumb) > 0, Transfer: a.Transfer.String(), Error: a.Err, Ready: a.Path != "" && a.Transfer == ferry.TransferDone}
	for _, w := range a.Waveform {
		out.Waveform = append(out.Waveform, int(w))
	}
	return out
}

// handleUpload sends the request's body as a file (POST
// /api/upload?conversation=ID&name=NAME, any type) or, with voice=1, a
// browser's WebM/Opus recording as an Ogg Opus voice note. Progress goes
// to the page as transfer events.
func (s *Server) handleUpload(c *ferry.Client, r *http.Request) (any, error) {
	q := r.URL.Query()
	conv, err := strconv.ParseInt(q.Get("conversation"), 10, 64)
	if err != nil || conv <= 0 {
		return nil, badRequest("which conversation?")
	}
	voice := q.Get("voice") == "1"
	name := q.Get("name")
	if voice {
		name = "voice note " + time.Now().Format("2006-01-02 15.04.05") + ".ogg"
	}
	path, err := s.keepUpload(r.Body, name, voice)
	if err != nil {
		return nil, err
	}
	told := map[[16]byte]bool{}
	opts := ferry.SendFileOptions{Voice: voice, Name: name, Progress: func(p ferry.Progress) {
		if !told[p.Message] {
			told[p.Message] = true
			s.hub.publish("changed", changedJSON{Conversations: []int64{conv}})
		}
		s.hub.publish("transfer", transferJSON{hex.EncodeToString(p.Message[:]), p.Outgoing, p.Done, p.Total})
	}}
	m, err := c.SendFile(r.Context(), ferry.ConversationID(conv), path, opts)
	if m == nil {
		os.Remove(path)
		return nil, err
	}
	return toMessage(m), err
}

// keepUpload writes an upload to the profile's sent directory under a
// fresh name, turning a voice recording into Ogg Opus first.
func (s *Server) keepUpload(body io.Reader, name string, voice bool) (string, error) {
	dir := filepath.Join(s.cfg.Profile.Home, sentDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tag := make([]byte, 8)
	if _, err := io.ReadFull(s.cfg.Rand, tag); err != nil {
		return "", err
	}
	ext := strings.ToLower(filepath.Ext(filepath.Base(name)))
	if len(ext) > 10 || strings.ContainsAny(ext, `/\`) {
		ext = ""
	}
	path := filepath.Join(dir, hex.EncodeToString(tag)+ext)
	if voice {
		rec, err := io.ReadAll(io.LimitReader(body, maxVoice+1))
		if err != nil || len(rec) > maxVoice {
			return "", badRequest("the recording is too long or was cut off")
		}
		ogg, err := webm.ToOgg(rec)
		if err != nil {
			return "", badRequest("this browser's recording cannot be read (%v); send an Ogg Opus file instead", err)
		}
		return path, os.WriteFile(path, ogg, 0o600)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", badRequest("the upload was cut off; try again")
	}
	return path, nil
}

// transferJSON is how far an upload or a download is.
type transferJSON struct {
	Message  string `json:"message"`
	Outgoing bool   `json:"outgoing"`
	Done     int64  `json:"done"`
	Total    int64  `json:"total"`
}

// inline lists the types the page shows itself (an image, a player);
// anything else is served as a download. SVG is not among them: it can
// carry script.
func inline(typ string) bool {
	for _, p := range []string{"image/jpeg", "image/png", "image/gif", "image/webp", "audio/", "video/"} {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// handleFile serves an attachment's file (GET /api/file?message=ID), or
// its thumbnail with thumb=1. Its answer runs in a sandbox: a file from a
// contact never runs as the app.
func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	c := s.clientOrNil()
	id, err := parseID(r.URL.Query().Get("message"))
	if c == nil || err != nil {
		http.NotFound(w, r)
		return
	}
	m, err := c.Message(r.Context(), id)
	a, ok := func() (*ferry.Attachment, bool) {
		if err != nil {
			return nil, false
		}
		a, ok := m.Body.(*ferry.Attachment)
		return a, ok
	}()
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	if r.URL.Query().Get("thumb") == "1" {
		if len(a.Thumb) == 0 {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", "image/jpeg")
		w.Write(a.Thumb)
		return
	}
	if a.Path == "" || a.Transfer != ferry.TransferDone {
		http.Error(w, "not downloaded yet", http.StatusConflict)
		return
	}
	f, err := os.Open(a.Path)
	if err != nil {
		http.Error(w, "the file is gone from this device", http.StatusGone)
		return
	}
	defer f.Close()
	typ := a.Type
	if !inline(typ) {
		typ = "application/octet-stream"
		h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", strings.Map(safeRune, a.Name)))
	}
	h.Set("Content-Type", typ)
	http.ServeContent(w, r, "", m.Sent, f)
}

func safeRune(r rune) rune {
	if r < 0x20 || r == '"' || r == '\\' || r == 0x7f {
		return '_'
	}
	return r
}

// handleDownload downloads an attachment that did not download by itself
// (over the profile's auto-download size) into the profile's files
// directory (POST /api/download {message}), telling the page how far it
// is.
func (s *Server) handleDownload(c *ferry.Client, r *http.Request) (any, error) {
	var req struct {
		Message string `json:"message"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	id, err := parseID(req.Message)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.cfg.Profile.Home, filesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	_, err = c.Save(r.Context(), id, dir, func(p ferry.Progress) {
		s.hub.publish("transfer", transferJSON{hex.EncodeToString(p.Message[:]), false, p.Done, p.Total})
	})
	return nil, err
}

// filesDir is where the client keeps received attachments (as Sync's
// downloads do).
const filesDir = "files"
