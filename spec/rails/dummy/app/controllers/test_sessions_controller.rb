# frozen_string_literal: true

class TestSessionsController < ApplicationController
  def create
    reset_session
    session[:role] = params[:role].presence
    session[:tenant_id] = params[:tenant_id].presence&.to_i
    render plain: "signed in as #{session[:role] || 'nobody'}"
  end
end
