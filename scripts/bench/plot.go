package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// bar is one ratio to plot: skiff ÷ a peer for one measurement.
type bar struct {
	label string
	ratio float64
	lower bool // lower is better (lag): the bar is drawn as peer ÷ skiff
}

// bars lists every ratio of the summary, in its order.
func (b *bench) bars() []bar {
	var out []bar
	for _, sec := range allSections {
		for _, m := range b.results {
			if m.section != sec || m.system != "skiff" || len(m.samples) == 0 || m.detail || m.unit == "TPS" || (sec == "capture" && m.unit == "rows/s") {
				continue
			}
			for _, p := range summaryPeers {
				for _, o := range b.results {
					if o.section == sec && o.name == m.name && o.system == p && len(o.samples) > 0 {
						r := median(m.samples) / median(o.samples)
						if m.lower {
							r = 1 / r
						}
						out = append(out, bar{label: m.name + " — vs " + shortLabel(p), ratio: r, lower: m.lower})
					}
				}
			}
		}
	}
	return out
}

// svg draws the ratios as horizontal bars on a log scale, 1× in the middle: right of it skiff
// is better (faster, or for lag: lags less), left of it the peer is.
func (b *bench) svg() string {
	bars := b.bars()
	if len(bars) == 0 {
		return ""
	}
	const (
		labelW = 480
		plotW  = 420
		rowH   = 22
		top    = 40
	)
	maxLog := 1.0 // at least 10× each way
	for _, r := range bars {
		if l := math.Abs(math.Log10(r.ratio)); l > maxLog && !math.IsInf(l, 0) {
			maxLog = math.Ceil(l)
		}
	}
	height := top + rowH*len(bars) + 30
	x0 := labelW + plotW/2
	scale := float64(plotW/2) / maxLog
	var w strings.Builder
	fmt.Fprintf(&w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", labelW+plotW+70, height)
	fmt.Fprintf(&w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&w, `<text x="10" y="20" font-size="14">skiff vs peers (log scale; right of 1× skiff is better; lag drawn as peer ÷ skiff)</text>`+"\n")
	for k := -int(maxLog); k <= int(maxLog); k++ {
		x := float64(x0) + float64(k)*scale
		fmt.Fprintf(&w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>`+"\n", x, top-5, x, height-25)
		fmt.Fprintf(&w, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g×</text>`+"\n", x, height-10, math.Pow(10, float64(k)))
	}
	for i, r := range bars {
		y := top + i*rowH
		fmt.Fprintf(&w, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-8, y+14, html.EscapeString(r.label))
		l := math.Log10(r.ratio) * scale
		x, bw, colour := float64(x0), l, "#2a7"
		if l < 0 {
			x, bw, colour = float64(x0)+l, -l, "#c44"
		}
		fmt.Fprintf(&w, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x, y+3, math.Max(bw, 1), rowH-6, colour)
		fmt.Fprintf(&w, `<text x="%.1f" y="%d" fill="#333">%s×</text>`+"\n", float64(x0)+math.Max(l, 0)+4, y+14, num(r.ratio))
	}
	fmt.Fprintf(&w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, top-5, x0, height-25)
	w.WriteString("</svg>\n")
	return w.String()
}
