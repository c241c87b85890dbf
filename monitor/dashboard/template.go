package dashboard

import "html/template"

// pageTemplate is the dashboard page and the HTML report: one file with
// its styles inline, no script, no request to anywhere.
var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct": func(f float64) int { return int(f*100 + 0.5) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>Ferry reachability monitor</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
.meta { color: #666; font-size: .9em; }
table.matrix { border-collapse: collapse; margin: .4em 0 1em; }
table.matrix th, table.matrix td { border: 1px solid #ccc; padding: .35em .6em; text-align: left; vertical-align: top; }
table.matrix th { background: #f4f4f4; }
td.cell { color: #fff; min-width: 9em; }
td.cell a { color: #fff; text-decoration: none; }
td.cell .state { font-weight: bold; font-size: 1.05em; }
td.cell .detail { font-size: .82em; opacity: .95; }
td.none { background: #fafafa; color: #aaa; }
.legend span { display: inline-block; padding: .1em .5em; margin-right: .3em; color: #fff; border-radius: 3px; font-size: .85em; }
section.cell { margin: 1em 0 1.6em; }
section.cell p { margin: .2em 0; }
.evidence { color: #444; }
</style>
</head>
<body>
<h1>Ferry reachability monitor</h1>
<p class="meta">Generated {{.Generated}}; plots from {{.From}} to {{.To}} (UTC).</p>
<p class="legend">{{range .States}}<span style="background:{{index $.Colors .}}">{{.}}</span>{{end}}</p>
{{if not .Vantages}}<p id="empty">No trials yet: run <code>ferry-monitor run</code> with this data directory.</p>{{end}}
{{range .Vantages}}
<h2>Vantage {{.Name}}</h2>
<table class="matrix" data-vantage="{{.Name}}">
<tr><th>relay</th><th>feature</th>{{range .Transports}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><td>{{.Relay}}</td><td>{{.Feature}}</td>
{{range .Cells}}{{if .}}<td class="cell" style="background:{{.Color}}" data-cell="{{.Cell.String}}" data-state="{{.State}}" data-mechanism="{{.Mechanism}}"><a href="#{{.ID}}"><div class="state">{{.State}}{{if .Mechanism}} ({{.Mechanism}}){{end}}</div>
<div class="detail">since {{.Since}}<br>confidence {{pct .Confidence}}%</div></a></td>{{else}}<td class="none">-</td>{{end}}{{end}}
</tr>{{end}}
</table>
{{end}}
{{range .Cells}}
<section class="cell" id="{{.ID}}">
<h2>{{.Cell.String}}: {{.State}}{{if .Mechanism}} ({{.Mechanism}}){{end}}</h2>
<p>Since {{.Since}} UTC, confidence {{pct .Confidence}}%, {{.Trials}} trials plotted; success rate {{pct .SuccessRate}}% over the last {{.Assessment.Trials}}.</p>
<p class="evidence">{{.Evidence}}</p>
{{.Plot}}
</section>
{{end}}
</body>
</html>
`))
