module productimport.dev/devenv/pause

go 1.25
