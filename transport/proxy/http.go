package proxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
)

// maxResponseHeader bounds a CONNECT response's header.
const maxResponseHeader = 32 << 10

// httpConnect asks an HTTP proxy to CONNECT to addr. Bytes the proxy sent
// after its response are kept for the conn's first reads.
func (d *Dialer) httpConnect(conn net.Conn, addr string) (net.Conn, error) {
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if d.cfg.User != "" {
		cred := base64.StdEncoding.EncodeToString([]byte(d.cfg.User + ":" + d.cfg.Password))
		req += "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return conn, d.protocolError(fmt.Sprintf("closed the connection (%v)", err))
	}
	lr := &io.LimitedReader{R: conn, N: maxResponseHeader}
	br := bufio.NewReader(lr)
	status, err := readConnectResponse(br)
	if err != nil {
		return conn, d.protocolError("did not answer as an HTTP proxy")
	}
	switch {
	case status/100 == 2:
	case status == http.StatusProxyAuthRequired && d.cfg.User == "":
		return conn, fmt.Errorf("the proxy %s wants a username and password; put them in the proxy URL as http://user:password@host:port: %w", d.cfg, ErrAuth)
	case status == http.StatusProxyAuthRequired:
		return conn, fmt.Errorf("the proxy %s rejected the username and password; check them in the proxy URL: %w", d.cfg, ErrAuth)
	default:
		return conn, fmt.Errorf("the proxy %s could not connect to %s (HTTP %d %s); check that the relay is up and that the proxy may reach it: %w",
			d.cfg, addr, status, http.StatusText(status), ErrRefused)
	}
	if br.Buffered() == 0 {
		return conn, nil
	}
	rest, _ := br.Peek(br.Buffered())
	return &prefixConn{Conn: conn, prefix: append([]byte(nil), rest...)}, nil
}

// readConnectResponse reads the status line and header of a response to
// CONNECT and returns its status code.
func readConnectResponse(br *bufio.Reader) (int, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, err
	}
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
	}
	return resp.StatusCode, nil
}

// prefixConn serves prefix before reading from the conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
