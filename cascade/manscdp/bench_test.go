package manscdp

import "testing"

func BenchmarkPeekKeepalive(b *testing.B) {
	body := readSample(b, "keepalive.xml")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Peek(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCatalogOneItem(b *testing.B) {
	body := readSample(b, "catalog_response.xml")
	b.ReportAllocs()
	for b.Loop() {
		var out CatalogResponse
		if err := Decode(body, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeCatalogGB2312(b *testing.B) {
	msg := chineseCatalog()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(RootResponse, msg, CharsetGB2312); err != nil {
			b.Fatal(err)
		}
	}
}
