"""`meshlearn serve` / `meshlearn join`: real FL server and client processes over TCP (filled in below)."""
