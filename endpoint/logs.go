package endpoint

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// RouteLibraryLogs sends the log lines sipgo writes outside any endpoint
// (connection reference counting such as "TCP ref went negative",
// unhandled requests) through log, at warn level and above, with long
// values clipped. Call it once at start, before any endpoint exists: sipgo
// reads its default logger without synchronisation.
func RouteLibraryLogs(log zerolog.Logger) {
	sip.SetDefaultLogger(libraryLogger(log))
}

// libraryLogger is the slog logger handed to sipgo: warnings and errors
// only (sipgo logs every transaction at debug and info), quoting at most
// maxQuote bytes of any value (its parse errors carry the whole message).
func libraryLogger(log zerolog.Logger) *slog.Logger {
	return slog.New(clipHandler{zerolog.NewSlogHandler(log.Level(maxLevel(log.GetLevel(), zerolog.WarnLevel)))})
}

// clipHandler clips the message and every attribute value to maxQuote bytes.
type clipHandler struct{ slog.Handler }

func (h clipHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, clip(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(clipAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h clipHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clipped := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clipped[i] = clipAttr(a)
	}
	return clipHandler{h.Handler.WithAttrs(clipped)}
}

func (h clipHandler) WithGroup(name string) slog.Handler {
	return clipHandler{h.Handler.WithGroup(name)}
}

func clipAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, clip(v.String()))
	case slog.KindAny:
		return slog.String(a.Key, clip(fmt.Sprint(v.Any())))
	case slog.KindGroup:
		group := v.Group()
		clipped := make([]any, len(group))
		for i, g := range group {
			clipped[i] = clipAttr(g)
		}
		return slog.Group(a.Key, clipped...)
	}
	return slog.Attr{Key: a.Key, Value: v}
}
