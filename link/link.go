// Package link reads and writes Ferry's two kinds of link: a relay link, which
// tells a client how to reach a relay and which static key proves it is the
// right relay, and an invite link, which adds what a new contact needs to
// reach the inviter (identity key, mailbox, delivery token, a one-time
// secret and the inviter's chosen name).
//
// A link is one line of URL-safe ASCII:
//
//	ferry://relay?v=1&k=<key>&<transport>=<host:port>[,<param>=<value>...][&<transport>=...]
//	ferry://invite?v=1&k=<key>&<transport>=<host:port>...&id=<identity>&mb=<mailbox>&tok=<token>&s=<secret>&n=<name>
//
// for example &tcp=relay.example:7443 or
// &https=relay.example:443,sni=www.example.org,s=<secret>. The link format
// knows no list of transports: it carries any well-formed transport name and
// its parameters, and the client decides which endpoints it can use.
//
// Binary values are unpadded base64url (RFC 4648 section 5) and must be
// canonical (no trailing bits set), so every value has exactly one text form
// and Parse then String gives back the same bytes. docs/protocol.md section 4
// is the specification.
//
// It is not a dialer: it does not resolve or check that an address is
// reachable, and it does not know what the keys are beyond their length.
package link

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Version is the link format version written in the v parameter. A parser
// rejects every other version with a message that asks for a newer Ferry.
const Version = 1

// Limits on the parts of a link.
const (
	// MaxEndpoints is the most endpoints one link may carry.
	MaxEndpoints = 8
	// MaxAddrLen is the longest endpoint address, in bytes.
	MaxAddrLen = 255
	// MaxParams is the most parameters one endpoint may carry.
	MaxParams = 8
	// MaxParamLen is the longest parameter value, in bytes.
	MaxParamLen = 255
	// MaxNameLen is the longest invite name, in bytes of UTF-8.
	MaxNameLen = 64
	// MaxLen is the longest link either parser accepts, in bytes.
	MaxLen = 4096
)

// Link prefixes (scheme and kind).
const (
	relayPrefix  = "ferry://relay?"
	invitePrefix = "ferry://invite?"
)

// Endpoint is one way to reach a relay: a transport name, an address that
// transport understands and the parameters it needs (keys, secrets, server
// names), in order.
type Endpoint struct {
	Transport string  `json:"transport"`        // "tcp", "https", ...: 1-16 of [a-z0-9]
	Addr      string  `json:"addr"`             // host:port
	Params    []Param `json:"params,omitempty"` // at most MaxParams, with distinct keys
}

// Param is one transport parameter of an endpoint. Its key is 1-16 of
// [a-z0-9]; its value is 1-MaxParamLen bytes of [A-Za-z0-9._~:-], which
// holds base64url, host names and numbers. Transports ignore keys they do
// not know, so that a newer relay's links still work with an older client;
// a parameter whose meaning changes needs a new transport name.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Param returns the value of the parameter called key.
func (e Endpoint) Param(key string) (string, bool) {
	for _, p := range e.Params {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Equal reports whether e and o are the same endpoint, parameters included.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Transport == o.Transport && e.Addr == o.Addr && slices.Equal(e.Params, o.Params)
}

// String formats the endpoint as it appears in a link:
// transport=host:port[,key=value...].
func (e Endpoint) String() string {
	var b strings.Builder
	e.append(&b)
	return b.String()
}

func (e Endpoint) append(b *strings.Builder) {
	b.WriteString(e.Transport)
	b.WriteByte('=')
	b.WriteString(e.Addr)
	for _, p := range e.Params {
		b.WriteByte(',')
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
}

// ParseEndpoint parses the text form String writes.
func ParseEndpoint(s string) (Endpoint, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || !isKey(name) {
		return Endpoint{}, fmt.Errorf("endpoint %q: want TRANSPORT=HOST:PORT[,KEY=VALUE...]", s)
	}
	return parseEndpoint(name, value)
}

// parseEndpoint parses the value of a transport parameter of a link.
func parseEndpoint(transport, value string) (Endpoint, error) {
	addr, rest, _ := strings.Cut(value, ",")
	if err := checkAddr(addr); err != nil {
		return Endpoint{}, fmt.Errorf("%s endpoint %q: %v", transport, addr, err)
	}
	e := Endpoint{Transport: transport, Addr: addr}
	if value == addr {
		return e, nil
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if err := checkParam(k, v); err != nil {
			return Endpoint{}, fmt.Errorf("%s endpoint %s: parameter %q: %v", transport, addr, k, err)
		}
		if _, dup := e.Param(k); dup {
			return Endpoint{}, fmt.Errorf("%s endpoint %s: parameter %q given twice", transport, addr, k)
		}
		if len(e.Params) == MaxParams {
			return Endpoint{}, fmt.Errorf("%s endpoint %s: more than %d parameters", transport, addr, MaxParams)
		}
		e.Params = append(e.Params, Param{Key: k, Value: v})
	}
	return e, nil
}

// Check reports whether e can be written in a link and parsed back to e.
func (e Endpoint) Check() error {
	got, err := ParseEndpoint(e.String())
	if err != nil {
		return err
	}
	if !got.Equal(e) {
		return fmt.Errorf("endpoint %q: an address or parameter contains link syntax", e.String())
	}
	return nil
}

func checkParam(k, v string) error {
	switch {
	case !isKey(k):
		return errors.New("key is not 1-16 of a-z and 0-9")
	case v == "":
		return errors.New("empty value")
	case len(v) > MaxParamLen:
		return fmt.Errorf("value longer than %d bytes", MaxParamLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._~:-", c) >= 0) {
			return fmt.Errorf("character %q not allowed in a value", c)
		}
	}
	return nil
}

// isKey reports whether s is 1-16 of [a-z0-9], the form of transport names
// and parameter keys.
func isKey(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Relay is everything a client needs to reach and authenticate a relay.
type Relay struct {
	Key       [32]byte   // the relay's Noise static X25519 public key
	Endpoints []Endpoint // in order of preference, at least one
}

// Invite is a one-time invitation to become the inviter's contact.
type Invite struct {
	Relay    Relay    // the inviter's relay
	Identity [32]byte // the inviter's session.PublicIdentity (Ed25519)
	Mailbox  [16]byte // the inviter's mailbox id
	Token    [32]byte // the inviter's delivery token
	Secret   [16]byte // one-time secret that proves the invitee holds this invite
	Name     string   // the inviter's chosen name, at most MaxNameLen bytes
}

var b64 = base64.RawURLEncoding.Strict()

// Check reports whether r can be written as a link that parses back to r.
func (r Relay) Check() error {
	got, err := ParseRelay(r.String())
	if err != nil {
		return err
	}
	if !slices.EqualFunc(got.Endpoints, r.Endpoints, Endpoint.Equal) {
		return errors.New("relay link: an endpoint address or parameter contains link syntax")
	}
	return nil
}

// Check reports whether i can be written as a link that parses back to i.
func (i Invite) Check() error {
	got, err := ParseInvite(i.String())
	if err != nil {
		return err
	}
	if !slices.EqualFunc(got.Relay.Endpoints, i.Relay.Endpoints, Endpoint.Equal) {
		return errors.New("invite link: an endpoint address or parameter contains link syntax")
	}
	return nil
}

// String formats the relay link. It does not validate r: call Check first
// on a Relay that did not come from ParseRelay.
func (r Relay) String() string {
	var b strings.Builder
	b.WriteString(relayPrefix)
	r.appendParams(&b)
	return b.String()
}

func (r Relay) appendParams(b *strings.Builder) {
	b.WriteString("v=")
	b.WriteString(strconv.Itoa(Version))
	b.WriteString("&k=")
	b.WriteString(b64.EncodeToString(r.Key[:]))
	for _, e := range r.Endpoints {
		b.WriteByte('&')
		e.append(b)
	}
}

// String formats the invite link.
func (i Invite) String() string {
	var b strings.Builder
	b.WriteString(invitePrefix)
	i.Relay.appendParams(&b)
	b.WriteString("&id=")
	b.WriteString(b64.EncodeToString(i.Identity[:]))
	b.WriteString("&mb=")
	b.WriteString(b64.EncodeToString(i.Mailbox[:]))
	b.WriteString("&tok=")
	b.WriteString(b64.EncodeToString(i.Token[:]))
	b.WriteString("&s=")
	b.WriteString(b64.EncodeToString(i.Secret[:]))
	b.WriteString("&n=")
	b.WriteString(b64.EncodeToString([]byte(i.Name)))
	return b.String()
}

// ParseRelay parses a relay link. It accepts exactly the form String writes:
// no surrounding space, parameters in order, each value canonical.
func ParseRelay(s string) (Relay, error) {
	p, err := newParser("relay link", s, relayPrefix)
	if err != nil {
		return Relay{}, err
	}
	r, err := p.relay()
	if err != nil {
		return Relay{}, err
	}
	if err := p.end(); err != nil {
		return Relay{}, err
	}
	return r, nil
}

// ParseInvite parses an invite link. It accepts exactly the form String
// writes.
func ParseInvite(s string) (Invite, error) {
	p, err := newParser("invite link", s, invitePrefix)
	if err != nil {
		return Invite{}, err
	}
	var inv Invite
	if inv.Relay, err = p.relay(); err != nil {
		return Invite{}, err
	}
	if err := p.key("id", "identity key", inv.Identity[:]); err != nil {
		return Invite{}, err
	}
	if err := p.key("mb", "mailbox", inv.Mailbox[:]); err != nil {
		return Invite{}, err
	}
	if err := p.key("tok", "delivery token", inv.Token[:]); err != nil {
		return Invite{}, err
	}
	if err := p.key("s", "secret", inv.Secret[:]); err != nil {
		return Invite{}, err
	}
	if inv.Name, err = p.name(); err != nil {
		return Invite{}, err
	}
	if err := p.end(); err != nil {
		return Invite{}, err
	}
	return inv, nil
}

// parser walks the &-separated parameters of a link in order.
type parser struct {
	what   string   // "relay link" or "invite link", the error prefix
	params []string // "name=value" pairs not yet consumed
}

func newParser(what, s, prefix string) (*parser, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("%s: longer than %d bytes", what, MaxLen)
	}
	if !strings.HasPrefix(s, prefix) {
		switch {
		case strings.HasPrefix(s, relayPrefix):
			return nil, fmt.Errorf("%s: this is a relay link, not an invite", what)
		case strings.HasPrefix(s, invitePrefix):
			return nil, fmt.Errorf("%s: this is an invite link, not a relay link", what)
		case strings.TrimSpace(s) != s:
			return nil, fmt.Errorf("%s: surrounding spaces or line breaks", what)
		case strings.HasPrefix(s, "ferry://"):
			return nil, fmt.Errorf("%s: unknown kind of ferry link", what)
		}
		return nil, fmt.Errorf("%s: does not start with %q", what, prefix)
	}
	rest := s[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !isLinkChar(c) {
			return nil, fmt.Errorf("%s: character %q not allowed", what, c)
		}
	}
	return &parser{what: what, params: strings.Split(rest, "&")}, nil
}

// isLinkChar reports whether c may appear after the prefix: the base64url
// alphabet, the address characters and the separators.
func isLinkChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.:~[]%=&,", c) >= 0
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{p.what}, args...)...)
}

// peek returns the name and value of the next parameter, ok false at the end.
func (p *parser) peek() (name, value string, ok bool) {
	if len(p.params) == 0 {
		return "", "", false
	}
	name, value, _ = strings.Cut(p.params[0], "=")
	return name, value, true
}

// take consumes the next parameter, which must be called name.
func (p *parser) take(name, what string) (string, error) {
	n, v, ok := p.peek()
	if !ok || n != name {
		if p.seen(name) {
			return "", p.errorf("%s (%s=) out of order", what, name)
		}
		return "", p.errorf("missing %s", what)
	}
	if !strings.Contains(p.params[0], "=") {
		return "", p.errorf("parameter %q has no value", n)
	}
	p.params = p.params[1:]
	return v, nil
}

func (p *parser) seen(name string) bool {
	for _, kv := range p.params {
		if n, _, _ := strings.Cut(kv, "="); n == name {
			return true
		}
	}
	return false
}

func (p *parser) key(name, what string, dst []byte) error {
	v, err := p.take(name, what)
	if err != nil {
		return err
	}
	if v == "" {
		return p.errorf("missing %s", what)
	}
	b, err := b64.DecodeString(v)
	if err != nil || len(b) != len(dst) {
		return p.errorf("%s is not %d bytes of base64url", what, len(dst))
	}
	copy(dst, b)
	return nil
}

func (p *parser) relay() (Relay, error) {
	v, err := p.take("v", "version")
	if err != nil {
		return Relay{}, err
	}
	if v != strconv.Itoa(Version) {
		if n, err := strconv.Atoi(v); err == nil && n > Version && strconv.Itoa(n) == v {
			return Relay{}, p.errorf("version %d needs a newer Ferry", n)
		}
		return Relay{}, p.errorf("unsupported version %q", v)
	}
	var r Relay
	if err := p.key("k", "relay key", r.Key[:]); err != nil {
		return Relay{}, err
	}
	if r.Key == [32]byte{} {
		return Relay{}, p.errorf("relay key is all zeros")
	}
	for {
		name, value, ok := p.peek()
		if !ok || !isTransportName(name) {
			break
		}
		if len(r.Endpoints) == MaxEndpoints {
			return Relay{}, p.errorf("more than %d endpoints", MaxEndpoints)
		}
		e, err := parseEndpoint(name, value)
		if err != nil {
			return Relay{}, p.errorf("%v", err)
		}
		r.Endpoints = append(r.Endpoints, e)
		p.params = p.params[1:]
	}
	if len(r.Endpoints) == 0 {
		return Relay{}, p.errorf("missing relay endpoint")
	}
	return r, nil
}

// isTransportName reports whether name looks like a transport parameter: the
// invite's own parameters are never transport names.
func isTransportName(name string) bool {
	switch name {
	case "id", "mb", "tok", "s", "n", "v", "k":
		return false
	}
	return isKey(name)
}

// checkAddr checks that a is host:port with a plausible host and a port in
// 1-65535, written canonically (no leading zeros).
func checkAddr(a string) error {
	if a == "" {
		return errors.New("empty address")
	}
	if len(a) > MaxAddrLen {
		return fmt.Errorf("longer than %d bytes", MaxAddrLen)
	}
	if strings.Contains(a, "%") {
		return errors.New("zone or escape in address")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("not host:port")
	}
	if host == "" {
		return errors.New("missing host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return errors.New("port is not a number from 1 to 65535")
	}
	if strings.Contains(host, ":") {
		// IPv6 literal: must have been bracketed and must parse.
		if net.ParseIP(host) == nil {
			return errors.New("bad IPv6 address")
		}
		return nil
	}
	if strings.ContainsAny(host, "[]") {
		return errors.New("misplaced bracket")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("bad host name")
		}
	}
	return nil
}

func (p *parser) name() (string, error) {
	v, err := p.take("n", "name")
	if err != nil {
		return "", err
	}
	b, err := b64.DecodeString(v)
	if err != nil {
		return "", p.errorf("name is not base64url")
	}
	if err := CheckName(string(b)); err != nil {
		return "", p.errorf("%v", err)
	}
	return string(b), nil
}

// CheckName reports whether name may be an invite name: valid UTF-8, at most
// MaxNameLen bytes, no control or format characters, not empty and not
// starting or ending with space.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name is longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	case strings.TrimSpace(name) != name:
		return errors.New("name starts or ends with space")
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return errors.New("name contains a control character")
		}
	}
	return nil
}

func (p *parser) end() error {
	if len(p.params) == 0 {
		return nil
	}
	name, _, _ := p.peek()
	return p.errorf("unexpected parameter %q", name)
}
