package channel

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"
)

// noiseVector is one object of the Noise wiki test-vector format.
type noiseVector struct {
	ProtocolName     string   `json:"protocol_name"`
	InitPrologue     hexBytes `json:"init_prologue"`
	InitStatic       hexBytes `json:"init_static"`
	InitEphemeral    hexBytes `json:"init_ephemeral"`
	InitRemoteStatic hexBytes `json:"init_remote_static"`
	InitPSKs         []string `json:"init_psks"`
	RespPrologue     hexBytes `json:"resp_prologue"`
	RespStatic       hexBytes `json:"resp_static"`
	RespEphemeral    hexBytes `json:"resp_ephemeral"`
	RespPSKs         []string `json:"resp_psks"`
	HandshakeHash    hexBytes `json:"handshake_hash"`
	Messages         []struct {
		Payload    hexBytes `json:"payload"`
		Ciphertext hexBytes `json:"ciphertext"`
	} `json:"messages"`
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

func loadVectors(t *testing.T) []noiseVector {
	t.Helper()
	b, err := os.ReadFile("testdata/noise-ik-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []noiseVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) != 32 {
		t.Fatalf("got %d vectors, want 32", len(file.Vectors))
	}
	return file.Vectors
}

// suiteOf parses Noise_<pattern>_25519_<cipher>_<hash>.
func suiteOf(t *testing.T, name string) (pattern string, cs noise.CipherSuite) {
	t.Helper()
	parts := strings.Split(name, "_")
	if len(parts) != 5 || parts[0] != "Noise" || parts[2] != "25519" {
		t.Fatalf("unexpected protocol name %q", name)
	}
	var c noise.CipherFunc
	switch parts[3] {
	case "ChaChaPoly":
		c = chachaPolyFunc{} // the channel's own, so the vectors check it
	case "AESGCM":
		c = noise.CipherAESGCM
	default:
		t.Fatalf("unknown cipher in %q", name)
	}
	var h noise.HashFunc
	switch parts[4] {
	case "SHA256":
		h = noise.HashSHA256
	case "SHA512":
		h = noise.HashSHA512
	case "BLAKE2s":
		h = noise.HashBLAKE2s
	case "BLAKE2b":
		h = noise.HashBLAKE2b
	default:
		t.Fatalf("unknown hash in %q", name)
	}
	return parts[1], noise.NewCipherSuite(noise.DH25519, c, h)
}

func keyPairOf(t *testing.T, priv []byte) KeyPair {
	t.Helper()
	var p [32]byte
	copy(p[:], priv)
	kp, err := NewKeyPair(p)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// runVector runs v with initiator and responder configs from mk and checks
// every message byte for byte.
func runVector(t *testing.T, v noiseVector, mk func(initiator bool, static KeyPair, peer []byte, random io.Reader, prologue []byte) noise.Config) {
	pattern, _ := suiteOf(t, v.ProtocolName)
	ic := mk(true, keyPairOf(t, v.InitStatic), v.InitRemoteStatic, bytes.NewReader(v.InitEphemeral), v.InitPrologue)
	rc := mk(false, keyPairOf(t, v.RespStatic), nil, bytes.NewReader(v.RespEphemeral), v.RespPrologue)
	if strings.HasPrefix(pattern, "IKpsk") {
		n := int(pattern[len(pattern)-1] - '0')
		ipsk, _ := hex.DecodeString(v.InitPSKs[0])
		rpsk, _ := hex.DecodeString(v.RespPSKs[0])
		ic.PresharedKey, ic.PresharedKeyPlacement = ipsk, n
		rc.PresharedKey, rc.PresharedKeyPlacement = rpsk, n
	}
	ihs, err := noise.NewHandshakeState(ic)
	if err != nil {
		t.Fatal(err)
	}
	rhs, err := noise.NewHandshakeState(rc)
	if err != nil {
		t.Fatal(err)
	}
	var iSend, iRecv, rSend, rRecv *noise.CipherState
	for i, m := range v.Messages {
		initiatorSends := i%2 == 0
		var got, plain []byte
		switch {
		case i < 2 && initiatorSends: // IK: two handshake messages
			got, _, _, err = ihs.WriteMessage(nil, m.Payload)
			if err == nil {
				plain, _, _, err = rhs.ReadMessage(nil, got)
			}
		case i < 2:
			var c1, c2 *noise.CipherState
			got, c1, c2, err = rhs.WriteMessage(nil, m.Payload)
			rRecv, rSend = c1, c2
			if err == nil {
				plain, iSend, iRecv, err = ihs.ReadMessage(nil, got)
			}
			if err == nil && v.HandshakeHash != nil {
				if hh := ihs.ChannelBinding(); !bytes.Equal(hh, v.HandshakeHash) {
					t.Errorf("handshake hash = %x, want %x", hh, v.HandshakeHash)
				}
			}
		case initiatorSends:
			got, err = iSend.Encrypt(nil, nil, m.Payload)
			if err == nil {
				plain, err = rRecv.Decrypt(nil, nil, got)
			}
		default:
			got, err = rSend.Encrypt(nil, nil, m.Payload)
			if err == nil {
				plain, err = iRecv.Decrypt(nil, nil, got)
			}
		}
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, m.Ciphertext) {
			t.Fatalf("message %d: ciphertext = %x, want %x", i, got, m.Ciphertext)
		}
		if !bytes.Equal(plain, m.Payload) {
			t.Fatalf("message %d: payload = %x, want %x", i, plain, m.Payload)
		}
	}
}

// TestNoiseVectors checks flynn/noise against every IK vector it can run.
func TestNoiseVectors(t *testing.T) {
	t.Parallel()
	for i, v := range loadVectors(t) {
		t.Run(fmt.Sprintf("%02d_%s", i, strings.TrimPrefix(v.ProtocolName, "Noise_")), func(t *testing.T) {
			t.Parallel()
			_, cs := suiteOf(t, v.ProtocolName)
			runVector(t, v, func(initiator bool, static KeyPair, peer []byte, random io.Reader, prologue []byte) noise.Config {
				return noise.Config{
					CipherSuite:   cs,
					Random:        random,
					Pattern:       noise.HandshakeIK,
					Initiator:     initiator,
					Prologue:      prologue,
					StaticKeypair: noise.DHKey{Private: static.Private[:], Public: static.Public[:]},
					PeerStatic:    peer,
				}
			})
		})
	}
}

// TestChannelConfigMatchesVectors runs the vectors of the channel's own
// protocol through noiseConfig, the function Client and Server use.
func TestChannelConfigMatchesVectors(t *testing.T) {
	t.Parallel()
	if got := "Noise_" + noise.HandshakeIK.Name + "_" + string(cipherSuite([32]byte{}).Name()); got != ProtocolName {
		t.Fatalf("channel suite is %q, want %q", got, ProtocolName)
	}
	n := 0
	for _, v := range loadVectors(t) {
		if v.ProtocolName != ProtocolName {
			continue
		}
		n++
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			runVector(t, v, noiseConfig)
		})
	}
	if n != 2 {
		t.Fatalf("found %d vectors for %s, want 2 (cacophony and snow)", n, ProtocolName)
	}
}

// TestClientUsesNoiseConfig checks that Client's first message is exactly
// what noiseConfig with Prologue produces for the same keys and randomness,
// so the vector-tested configuration is the one on the wire.
func TestClientUsesNoiseConfig(t *testing.T) {
	t.Parallel()
	cli, relay := mustKey(t), mustKey(t)
	eph := bytes.Repeat([]byte{7}, 32)
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		cfg := &Config{Rand: bytes.NewReader(eph)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg.Client(ctx, a, cli, relay.Public) // fails when b closes; only message 1 matters
	}()
	msg1, err := readHandshake(b, maxHandshakeMsg1)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noiseConfig(true, cli, relay.Public[:], bytes.NewReader(eph), Prologue))
	if err != nil {
		t.Fatal(err)
	}
	want, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg1, want) {
		t.Fatalf("client message 1 = %x, want %x", msg1, want)
	}
	// And the relay accepts it only with the documented prologue.
	rhs, _ := noise.NewHandshakeState(noiseConfig(false, relay, nil, nil, []byte("other prologue")))
	if _, _, _, err := rhs.ReadMessage(nil, msg1); err == nil {
		t.Fatal("message 1 accepted under a different prologue")
	}
}

func TestPrologue(t *testing.T) {
	t.Parallel()
	want := append([]byte("ferry channel\x00"), 0, 1)
	if !bytes.Equal(Prologue, want) {
		t.Fatalf("Prologue = %q, want %q", Prologue, want)
	}
}
