package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// SOCKS5 bytes (RFC 1928, RFC 1929).
const (
	socksVersion   = 5
	socksNoAuth    = 0x00
	socksUserPass  = 0x02
	socksNoMethod  = 0xff
	socksConnect   = 0x01
	socksIPv4      = 0x01
	socksDomain    = 0x03
	socksIPv6      = 0x04
	userPassVer    = 0x01
	userPassOK     = 0x00
	socksSucceeded = 0x00
)

// socksReplies are the meanings of RFC 1928's reply codes.
var socksReplies = map[byte]string{
	1: "general SOCKS server failure",
	2: "connection not allowed by ruleset",
	3: "network unreachable",
	4: "host unreachable",
	5: "connection refused",
	6: "TTL expired",
	7: "command not supported",
	8: "address type not supported",
}

func (d *Dialer) protocolError(what string) error {
	return fmt.Errorf("the proxy %s %s; check the proxy URL's scheme and port: %w", d.cfg, what, ErrProtocol)
}

// socksConnect runs the SOCKS5 handshake and CONNECT request on conn.
func (d *Dialer) socksConnect(conn net.Conn, host string, port int) error {
	methods := []byte{socksNoAuth}
	if d.cfg.User != "" {
		methods = []byte{socksUserPass}
	}
	if _, err := conn.Write(append([]byte{socksVersion, byte(len(methods))}, methods...)); err != nil {
		return d.protocolError(fmt.Sprintf("closed the connection (%v)", err))
	}
	var sel [2]byte
	if _, err := io.ReadFull(conn, sel[:]); err != nil || sel[0] != socksVersion {
		return d.protocolError("did not answer as a SOCKS5 proxy")
	}
	switch {
	case sel[1] == socksNoMethod && d.cfg.User == "":
		return fmt.Errorf("the proxy %s wants a username and password; put them in the proxy URL as socks5://user:password@host:port: %w", d.cfg, ErrAuth)
	case sel[1] == socksUserPass && d.cfg.User != "":
		if err := d.socksAuth(conn); err != nil {
			return err
		}
	case sel[1] != methods[0]:
		return d.protocolError(fmt.Sprintf("chose authentication method %d, which Ferry did not offer", sel[1]))
	}
	if _, err := conn.Write(socksRequest(host, port)); err != nil {
		return d.protocolError(fmt.Sprintf("closed the connection (%v)", err))
	}
	code, err := readSocksReply(conn)
	if err != nil {
		return d.protocolError(err.Error())
	}
	if code != socksSucceeded {
		msg, ok := socksReplies[code]
		if !ok {
			msg = fmt.Sprintf("reply code %d", code)
		}
		return fmt.Errorf("the proxy %s could not connect to %s (%s); check that the relay is up and that the proxy may reach it: %w",
			d.cfg, net.JoinHostPort(host, fmt.Sprint(port)), msg, ErrRefused)
	}
	return nil
}

func (d *Dialer) socksAuth(conn net.Conn) error {
	req := []byte{userPassVer, byte(len(d.cfg.User))}
	req = append(req, d.cfg.User...)
	req = append(req, byte(len(d.cfg.Password)))
	req = append(req, d.cfg.Password...)
	if _, err := conn.Write(req); err != nil {
		return d.protocolError(fmt.Sprintf("closed the connection (%v)", err))
	}
	var resp [2]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil || resp[1] != userPassOK {
		return fmt.Errorf("the proxy %s rejected the username and password; check them in the proxy URL: %w", d.cfg, ErrAuth)
	}
	return nil
}

// socksRequest encodes a CONNECT request: an IP address as such, a name
// as a domain name for the proxy to resolve.
func socksRequest(host string, port int) []byte {
	req := []byte{socksVersion, socksConnect, 0}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		ip = ip.Unmap()
		if ip.Is4() {
			req = append(req, socksIPv4)
		} else {
			req = append(req, socksIPv6)
		}
		req = append(req, ip.AsSlice()...)
	} else {
		req = append(req, socksDomain, byte(len(host)))
		req = append(req, host...)
	}
	return binary.BigEndian.AppendUint16(req, uint16(port))
}

// readSocksReply reads a CONNECT reply (RFC 1928 section 6) whole and
// returns its reply code.
func readSocksReply(r io.Reader) (code byte, err error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("ended its reply early")
	}
	if h[0] != socksVersion || h[2] != 0 {
		return 0, fmt.Errorf("sent a malformed reply")
	}
	var n int
	switch h[3] {
	case socksIPv4:
		n = 4
	case socksIPv6:
		n = 16
	case socksDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, fmt.Errorf("ended its reply early")
		}
		n = int(l[0])
	default:
		return 0, fmt.Errorf("sent a reply with address type %d", h[3])
	}
	if _, err := io.ReadFull(r, make([]byte, n+2)); err != nil {
		return 0, fmt.Errorf("ended its reply early")
	}
	return h[1], nil
}
