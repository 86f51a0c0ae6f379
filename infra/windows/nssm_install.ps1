<#
.SYNOPSIS
    Install (or update) ORCH-Next's API as a Windows service with NSSM on 127.0.0.1:5001: the operations
    guide's "Windows Dashboard Service". Without -Apply it only prints what it would do.

.DESCRIPTION
    - Service ORCH-Next runs <AppDirectory>\.venv\Scripts\python.exe -m orch.api.server in <AppDirectory>,
      starts automatically (SERVICE_AUTO_START) and is stopped with Ctrl-C, which uvicorn answers by
      finishing open requests.
    - AppEnvironmentExtra: ORCH_HOST=127.0.0.1, ORCH_PORT=5001, ORCH_MCP_TOKEN. The token lives only in
      NSSM's environment (the service's registry key, readable by administrators): an existing service
      keeps its token, a new one gets -McpToken, $env:ORCH_MCP_TOKEN, or a generated one. It is never printed.
    - PREFECT_API_AUTH_STRING, the Prefect server's auth string, only when given (-PrefectAuthString or
      $env:PREFECT_API_AUTH_STRING; a re-run without it keeps the service's; never printed). Without it the API
      uses the one `orch up` generated into data\secrets.json (prefect_auth_string), which is what a
      Prefect server started by `orch up` in the same directory requires.
    - stdout/stderr go to data\logs\current\service_stdout.log / service_stderr.log, rotated by NSSM at
      10 MB or after 1 day, also while running. NSSM keeps every rotated file, so a daily scheduled task
      (ORCH-Next-LogPrune, this script with -PruneLogs) keeps the newest 5 per stream.
    Safe to run again: it sets the same values and restarts the service.

.EXAMPLE
    pwsh infra/windows/nssm_install.ps1            # dry run: prints the nssm commands
.EXAMPLE
    pwsh infra/windows/nssm_install.ps1 -Apply     # install or update, then (re)start; run as administrator
#>
[CmdletBinding()]
param(
    [switch]$Apply,
    [switch]$PruneLogs,
    [string]$ServiceName = "ORCH-Next",
    [string]$AppDirectory = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path,
    [string]$ListenHost = "127.0.0.1",
    [int]$Port = 5001,
    [string]$McpToken = $env:ORCH_MCP_TOKEN,
    [string]$PrefectAuthString = $env:PREFECT_API_AUTH_STRING
)

Set-StrictMode -Version Latest
$ErrorActionPreference = "Stop"

$Python = Join-Path $AppDirectory ".venv\Scripts\python.exe"
$LogDir = Join-Path $AppDirectory "data\logs\current"
$RotateKeepFiles = 5
$RotateBytes = 10485760      # 10 MB
$RotateSeconds = 86400       # 1 day
$PruneTaskName = "$ServiceName-LogPrune"

function Remove-OldLogs {
    # NSSM renames a rotated log to service_stdout-<timestamp>.log; keep the newest $RotateKeepFiles.
    foreach ($stream in "service_stdout", "service_stderr") {
        Get-ChildItem -Path $LogDir -Filter "$stream-*.log" -ErrorAction SilentlyContinue |
            Sort-Object LastWriteTime -Descending |
            Select-Object -Skip $RotateKeepFiles |
            Remove-Item -Force
    }
}

if ($PruneLogs) {
    Remove-OldLogs
    exit 0
}

function Test-ServiceExists {
    try { return $null -ne (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) }
    catch { return $false }  # Get-Service exists on Windows only; a dry run elsewhere assumes a new service
}

function Get-ExistingToken([string]$Name = "ORCH_MCP_TOKEN") {
    # An installed service keeps its token: re-running the script must not log every client out.
    # NSSM may answer in UTF-16 when redirected; dropping the NULs makes it plain text either way.
    $lines = & nssm get $ServiceName AppEnvironmentExtra 2>$null
    foreach ($line in @($lines)) {
        if (($line -replace "`0", "") -match "^$Name=(.+)$") { return $Matches[1] }
    }
    return $null
}

function New-Token {
    $bytes = New-Object byte[] 32
    [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
    return [Convert]::ToBase64String($bytes).TrimEnd("=").Replace("+", "-").Replace("/", "_")
}

function Format-Command([string[]]$Arguments) {
    $shown = foreach ($arg in $Arguments) {
        $masked = $arg -replace '^ORCH_MCP_TOKEN=.*$', 'ORCH_MCP_TOKEN=********' `
                       -replace '^PREFECT_API_AUTH_STRING=.*$', 'PREFECT_API_AUTH_STRING=********'
        if ($masked -match '\s') { '"' + $masked + '"' } else { $masked }
    }
    return "nssm " + ($shown -join " ")
}

function Invoke-Nssm([string[]]$Arguments) {
    Write-Host (Format-Command $Arguments)
    if ($Apply) {
        & nssm @Arguments | Out-Null
        if ($LASTEXITCODE -ne 0) { throw "$(Format-Command $Arguments) failed with exit code $LASTEXITCODE" }
    }
}

$exists = Test-ServiceExists
if ($Apply) {
    if (-not (Get-Command nssm -ErrorAction SilentlyContinue)) { throw "nssm not found on PATH (choco install nssm)" }
    if (-not (Test-Path $Python)) { throw "$Python not found: create the venv first (python -m venv .venv; .venv\Scripts\pip install --require-hashes --no-deps -r requirements.lock; .venv\Scripts\pip install --no-deps --no-build-isolation -e .)" }
    if ($exists) {
        $existing = Get-ExistingToken
        if ($existing) { $McpToken = $existing }
        $existingAuth = Get-ExistingToken "PREFECT_API_AUTH_STRING"
        if ($existingAuth -and -not $PrefectAuthString) { $PrefectAuthString = $existingAuth }
    }
}
if (-not $McpToken) { $McpToken = New-Token }
$PrefectAuthEnv = @(if ($PrefectAuthString) { "PREFECT_API_AUTH_STRING=$PrefectAuthString" })

$settings = @(
    @("Application", $Python),
    @("AppParameters", "-m orch.api.server"),
    @("AppDirectory", $AppDirectory),
    @("DisplayName", "ORCH-Next Orchestration Service"),
    @("Description", "ORCH-Next API (uvicorn) on ${ListenHost}:${Port}"),
    @("Start", "SERVICE_AUTO_START"),
    (@("AppEnvironmentExtra", "ORCH_HOST=$ListenHost", "ORCH_PORT=$Port", "ORCH_MCP_TOKEN=$McpToken") + $PrefectAuthEnv),
    @("AppStdout", (Join-Path $LogDir "service_stdout.log")),
    @("AppStderr", (Join-Path $LogDir "service_stderr.log")),
    @("AppRotateFiles", "1"),
    @("AppRotateOnline", "1"),
    @("AppRotateSeconds", "$RotateSeconds"),
    @("AppRotateBytes", "$RotateBytes"),
    @("AppStopMethodConsole", "10000"),
    @("AppExit", "Default", "Restart"),
    @("AppRestartDelay", "5000")
)

if (-not $Apply) { Write-Host "Dry run (add -Apply to change the system):" }
if ($Apply) { New-Item -ItemType Directory -Force -Path $LogDir | Out-Null } else { Write-Host "mkdir $LogDir" }
if (-not $exists) { Invoke-Nssm @("install", $ServiceName, $Python, "-m orch.api.server") }
foreach ($setting in $settings) { Invoke-Nssm (@("set", $ServiceName) + $setting) }

$pruneArgs = "-NoProfile -ExecutionPolicy Bypass -File `"$PSCommandPath`" -PruneLogs -AppDirectory `"$AppDirectory`""
Write-Host "scheduled task $PruneTaskName (daily 03:30): powershell.exe $pruneArgs"
if ($Apply) {
    $action = New-ScheduledTaskAction -Execute "powershell.exe" -Argument $pruneArgs
    $trigger = New-ScheduledTaskTrigger -Daily -At "3:30AM"
    Register-ScheduledTask -TaskName $PruneTaskName -Action $action -Trigger $trigger -User "SYSTEM" -Force | Out-Null
}

$verb = if ($exists) { "restart" } else { "start" }
Invoke-Nssm @($verb, $ServiceName)
Write-Host "health: GET http://${ListenHost}:${Port}/healthz"
