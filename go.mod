module spectrum

go 1.26
