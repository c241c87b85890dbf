package web

import (
	"fmt"
	"strings"

	"rsc.io/qr"
)

// qrModules encodes text as a QR code and returns its modules, one string
// of '1' (dark) and '0' (light) per row, for the page to draw.
func qrModules(text string) ([]string, error) {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return nil, fmt.Errorf("make QR code: %w", err)
	}
	rows := make([]string, code.Size)
	var b strings.Builder
	for y := range code.Size {
		b.Reset()
		for x := range code.Size {
			if code.Black(x, y) {
				b.WriteByte('1')
			} else {
				b.WriteByte('0')
			}
		}
		rows[y] = b.String()
	}
	return rows, nil
}
