# bash completion for spectrumd: its commands, each command's flags, and VM
# names (those the running daemon lists, or the directories in the data
# directory when no daemon answers; -run DIR and -data DIR on the line are
# respected). The lists come from spectrumd itself (`spectrumd __complete`),
# so they are those of the spectrumd being completed.
# Installed by `make install` to $(PREFIX)/share/bash-completion/completions.

_spectrumd() {
	local cur=${COMP_WORDS[COMP_CWORD]} IFS=$'\n'
	local -a out
	out=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)) || return 0
	if [[ ${out[0]-} == :dirs ]]; then
		# The value of a DIR flag; after "-data=" the word is the "=".
		[[ $cur == = ]] && cur=
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -d -- "$cur"))
		return 0
	fi
	COMPREPLY=("${out[@]}")
}
complete -F _spectrumd spectrumd
