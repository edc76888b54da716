package stack

import (
	"errors"
	"net"
	"testing"
)

// TestStartPstestPortTaken: pstest panics when its port is taken (the
// race checkListen cannot close); startPstest turns that into an error.
func TestStartPstestPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := startPstest(l.Addr().String())
	var le *ListenError
	if srv != nil || !errors.As(err, &le) || le.Option != "PubSubAddr" || !le.InUse() {
		t.Fatalf("startPstest on a taken port = %v, %v; want a *ListenError in use", srv, err)
	}
}
