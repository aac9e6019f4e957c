package notification_test

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/notification"
)

// TestLoginNotificationDatesTheReadersWay: the time of a sign-in is written the way the
// reader's language writes dates, in UTC.
func TestLoginNotificationDatesTheReadersWay(t *testing.T) {
	t.Parallel()
	n := notification.Notification{Event: notification.EventAuthLogin,
		Data: map[string]any{"ip": "203.0.113.7", "at": "2026-01-02T15:04:05.123-03:00"}}
	for lang, want := range map[string]string{
		i18n.English:    "Your account was signed in from 203.0.113.7 at 2026-01-02 18:04 UTC.",
		i18n.Portuguese: "Sua conta foi acessada a partir de 203.0.113.7 em 02/01/2026 18:04 UTC.",
	} {
		if _, msg := n.Render(lang); msg != want {
			t.Errorf("%s: %q, want %q", lang, msg, want)
		}
	}
}
