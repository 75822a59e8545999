// kubemam-encrypt: mp4ff's Common Encryption (cenc or cbcs) of one fragmented MP4 file, with the key,
// KID and IV read from stdin or a file, never from the command line (argv is readable by every process
// on the node through /proc/<pid>/cmdline and recorded by exec auditing).
//
// The encryption mirrors mp4ff v0.56.0's cmd/mp4ff-encrypt (InitProtect, then one FragmentEncryptor per
// segment with the IV chained across segments), so the output is byte-identical to it for the same
// key and IV; tests/integration/test_encryptor.py checks that.
//
// Usage: kubemam-encrypt [-scheme cenc|cbcs] [-pssh FILE] [-params FILE|-] infile outfile
// where the params (default: stdin) are JSON: {"kid": "<32 hex>", "key": "<32 hex>", "iv": "<16 or 32 hex>"}.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/Eyevinn/mp4ff/mp4"
)

const appName = "kubemam-encrypt"

type params struct {
	KID string `json:"kid"`
	Key string `json:"key"`
	IV  string `json:"iv"`
}

// secrets are the decoded params. Errors never quote the key.
type secrets struct {
	kid mp4.UUID
	key []byte
	iv  []byte
}

func decodeHex(name, value string, sizes ...int) ([]byte, error) {
	raw, err := hex.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("%s is not hex", name)
	}
	for _, size := range sizes {
		if len(raw) == size {
			return raw, nil
		}
	}
	return nil, fmt.Errorf("%s is %d bytes, want %v", name, len(raw), sizes)
}

func readParams(r io.Reader) (*secrets, error) {
	var p params
	dec := json.NewDecoder(io.LimitReader(r, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, errors.New("params are not a JSON object with kid, key and iv")
	}
	kid, err := decodeHex("kid", p.KID, 16)
	if err != nil {
		return nil, err
	}
	key, err := decodeHex("key", p.Key, 16)
	if err != nil {
		return nil, err
	}
	iv, err := decodeHex("iv", p.IV, 8, 16)
	if err != nil {
		return nil, err
	}
	return &secrets{kid: mp4.UUID(kid), key: key, iv: iv}, nil
}

// encrypt streams: one top-level box at a time, so memory holds one fragment, never the file. It
// mirrors mp4ff's DecodeFile + mp4ff-encrypt: a segment starts at the first moof and at every styp;
// each segment gets its own FragmentEncryptor, the IV chained across segments; the output is the init
// segment, then each segment's boxes, then any mfra, as File.Encode writes them.
func encrypt(in io.Reader, out io.Writer, scheme string, s *secrets, psshData []byte) error {
	if scheme != "cenc" && scheme != "cbcs" {
		return fmt.Errorf("scheme must be cenc or cbcs: %s", scheme)
	}
	boxes, err := mp4.PsshBoxesFromBytes(psshData)
	if err != nil {
		return fmt.Errorf("pssh boxes from data: %w", err)
	}
	r := bufio.NewReaderSize(in, 1<<20)
	w := bufio.NewWriterSize(out, 1<<20)
	var (
		pos        uint64
		ftyp       *mp4.FtypBox
		ipd        *mp4.InitProtectData
		enc        *mp4.FragmentEncryptor
		frag       *mp4.Fragment
		newSegment bool
	)
	iv := s.iv
	for {
		box, err := mp4.DecodeBox(pos, r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("decode box at byte %d: %w", pos, err)
		}
		switch b := box.(type) {
		case *mp4.FtypBox:
			ftyp = b
		case *mp4.MoovBox:
			init := mp4.NewMP4Init()
			if ftyp != nil {
				init.AddChild(ftyp)
			}
			init.AddChild(b)
			if ipd, err = mp4.InitProtect(init, s.key, s.iv, scheme, s.kid, boxes); err != nil {
				return fmt.Errorf("init protect: %w", err)
			}
			if err := init.Encode(w); err != nil {
				return err
			}
		case *mp4.StypBox:
			newSegment = true
			if err := b.Encode(w); err != nil {
				return err
			}
		case *mp4.MoofBox:
			if ipd == nil {
				return errors.New("the file has no init segment")
			}
			if frag != nil {
				return fmt.Errorf("moof at byte %d follows a moof with no mdat", pos)
			}
			if enc == nil || newSegment {
				if enc, err = ipd.NewFragmentEncryptor(s.key, iv); err != nil {
					return fmt.Errorf("new fragment encryptor: %w", err)
				}
				newSegment = false
			}
			b.StartPos = pos
			frag = &mp4.Fragment{StartPos: pos}
			frag.AddChild(b)
		case *mp4.MdatBox:
			if frag == nil {
				return fmt.Errorf("mdat at byte %d has no moof before it", pos)
			}
			frag.AddChild(b)
			if err := enc.EncryptFragment(frag); err != nil {
				return fmt.Errorf("encrypt fragment: %w", err)
			}
			if err := frag.Encode(w); err != nil {
				return err
			}
			iv = enc.IV()
			frag = nil
		case *mp4.MfraBox:
			if err := b.Encode(w); err != nil {
				return err
			}
		}
		pos += box.Size()
	}
	if ipd == nil {
		return errors.New("the file has no init segment")
	}
	return w.Flush()
}

func mp4ffVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/Eyevinn/mp4ff" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func run(args []string, stdin io.Reader) (err error) {
	fs := flag.NewFlagSet(appName, flag.ContinueOnError)
	scheme := fs.String("scheme", "cenc", "cenc or cbcs")
	psshFile := fs.String("pssh", "", "a file with pssh box(es), added at the end of moov")
	paramsFile := fs.String("params", "-", `JSON {"kid","key","iv"} in hex: a file (on a memory-backed volume), or - for stdin`)
	version := fs.Bool("version", false, "print the version of mp4ff this is built with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Printf("%s (mp4ff %s)\n", appName, mp4ffVersion())
		return nil
	}
	if fs.NArg() != 2 {
		return errors.New("need an input and an output file")
	}
	source := stdin
	if *paramsFile != "-" {
		f, err := os.Open(*paramsFile)
		if err != nil {
			return fmt.Errorf("open params: %w", err)
		}
		defer f.Close()
		source = f
	}
	s, err := readParams(source)
	if err != nil {
		return err
	}
	defer clear(s.key)
	var psshData []byte
	if *psshFile != "" {
		if psshData, err = os.ReadFile(*psshFile); err != nil {
			return fmt.Errorf("read pssh: %w", err)
		}
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer in.Close()
	out, err := os.Create(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close output: %w", cerr)
		}
	}()
	return encrypt(in, out, *scheme, s, psshData)
}

func main() {
	if err := run(os.Args[1:], os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
