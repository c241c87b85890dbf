package https

import (
	"embed"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
)

//go:embed site
var builtinSite embed.FS

// BuiltinSite is the plain website a relay serves by default: a few static
// pages, served by net/http's file server.
func BuiltinSite() http.Handler {
	sub, err := fs.Sub(builtinSite, "site")
	if err != nil {
		panic(err)
	}
	return http.FileServerFS(sub)
}

// StaticSite serves the files under dir, as net/http's file server does.
func StaticSite(dir string) http.Handler { return http.FileServer(http.Dir(dir)) }

// UpstreamSite reverse-proxies every request to the website at u, so the
// relay shows that site's pages, statuses and headers.
func UpstreamSite(u *url.URL) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite:  func(r *httputil.ProxyRequest) { r.SetURL(u) },
		ErrorLog: log.New(io.Discard, "", 0),
	}
}
